package dev.pglock.core.internal;

import java.time.Duration;

/** Durations as this process's monotonic clock counts them. */
public final class Durations {

    /** The longest span counted: about 73 years, so that adding it to System.nanoTime() cannot overflow. */
    private static final long LONGEST_NANOS = Long.MAX_VALUE / 4;

    private Durations() {
    }

    /**
     * {@code duration} in nanoseconds, at most {@link #LONGEST_NANOS}: a longer one (also one beyond
     * what a long can say, about 292 years, where {@link Duration#toNanos()} throws) means "ever".
     */
    public static long nanosAtMost(Duration duration) {
        try {
            return Math.min(duration.toNanos(), LONGEST_NANOS);
        } catch (ArithmeticException beyond) {
            return LONGEST_NANOS;
        }
    }
}
