package dev.pglock.core.internal;

import java.time.Duration;

/** Argument checks the builders share; each message names the setting and the value. */
public final class Checks {

    private Checks() {
    }

    public static Duration positive(String field, Duration value) {
        if (value == null || value.isNegative() || value.isZero()) {
            throw new IllegalArgumentException(field + " must be positive, got " + value);
        }
        return value;
    }

    /**
     * {@code value}, positive and at most {@link Durations#LONGEST} (about 73 years): a lease or a
     * heartbeat interval the client's monotonic clock can count.
     */
    public static Duration span(String field, Duration value) {
        positive(field, value);
        if (value.compareTo(Durations.LONGEST) > 0) {
            throw new IllegalArgumentException(field + " must be at most " + Durations.LONGEST
                    + " (about 73 years, the longest span this client's clock counts), got " + value);
        }
        return value;
    }

    /** A namespace: not null ("" for none), at most 255 characters, no NUL (PostgreSQL's text has none). */
    public static String namespace(String namespace) {
        if (namespace == null) {
            throw new IllegalArgumentException("namespace must not be null (use \"\" for none)");
        }
        if (namespace.length() > 255 || namespace.indexOf('\0') >= 0) {
            throw new IllegalArgumentException("namespace must be at most 255 characters without NUL, got '"
                    + namespace.replace("\0", "\\0") + "'");
        }
        return namespace;
    }

    public static int between(String field, int value, int min, int max) {
        if (value < min || value > max) {
            throw new IllegalArgumentException(field + " must be between " + min + " and " + max + ", got " + value);
        }
        return value;
    }
}
