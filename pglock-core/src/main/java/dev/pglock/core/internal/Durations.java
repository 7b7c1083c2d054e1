package dev.pglock.core.internal;

import java.time.Duration;

/** Durations as this process's monotonic clock counts them. */
public final class Durations {

    /** The longest span counted: about 73 years, so that adding it to System.nanoTime() cannot overflow. */
    private static final long LONGEST_NANOS = Long.MAX_VALUE / 4;
    /** {@link #LONGEST_NANOS} as a Duration: the longest lease or heartbeat interval a client accepts. */
    public static final Duration LONGEST = Duration.ofNanos(LONGEST_NANOS);

    private Durations() {
    }

    /**
     * {@code duration} in nanoseconds, at most {@link #LONGEST_NANOS}: a longer one (also one beyond
     * what a long can say, about 292 years, where {@link Duration#toNanos()} throws) means "ever".
     */
    public static long nanosAtMost(Duration duration) {
        if (duration.compareTo(LONGEST) >= 0) {
            return LONGEST_NANOS;
        }
        return duration.toNanos();
    }

    /** {@code duration}, or {@link #LONGEST} when longer: a longer one means "ever". */
    public static Duration atMostLongest(Duration duration) {
        return duration.compareTo(LONGEST) > 0 ? LONGEST : duration;
    }

    /** {@code instant} plus {@code duration}, or {@link java.time.Instant#MAX} beyond it. */
    public static java.time.Instant plusAtMost(java.time.Instant instant, Duration duration) {
        try {
            return instant.plus(duration);
        } catch (ArithmeticException | java.time.DateTimeException beyond) {
            return java.time.Instant.MAX;
        }
    }
}
