package dev.pglock.benchmarks;

import java.util.concurrent.TimeUnit;
import java.util.function.Predicate;
import javax.sql.DataSource;
import org.HdrHistogram.Histogram;

/**
 * Times, from the client's side, the statements a predicate picks out (a lock client's heartbeat,
 * say) on the connections of a DataSource it wraps, by round: executions that follow one another
 * within 100 ms (a heartbeat sent in several statements, some at once) are one round, timed from the
 * first one's start to the last one's end. Everything else is passed through untouched: the client
 * under test runs on the real pool and the real connections.
 */
final class StatementTimer {

    private final String what;
    private final Predicate<String> which;
    private static final long ROUND_GAP_NANOS = TimeUnit.MILLISECONDS.toNanos(100);
    private Histogram durations = newHistogram();
    private long roundStart;
    private long roundEnd;
    private boolean inRound;
    private long statements;

    StatementTimer(String what, Predicate<String> which) {
        this.what = what;
        this.which = which;
    }

    /** What is timed, for the report. */
    String what() {
        return what;
    }

    synchronized void reset() {
        durations = newHistogram();
        inRound = false;
        statements = 0;
    }

    /** The rounds so far, the one under way included. */
    synchronized Histogram snapshot() {
        Histogram copy = durations.copy();
        if (inRound) {
            copy.recordValue(Math.min(roundEnd - roundStart, copy.getHighestTrackableValue()));
        }
        return copy;
    }

    /** Statements timed since the last reset. */
    synchronized long statements() {
        return statements;
    }

    private synchronized void record(long start, long end) {
        statements++;
        if (inRound && start - roundEnd > ROUND_GAP_NANOS) {
            durations.recordValue(Math.min(roundEnd - roundStart, durations.getHighestTrackableValue()));
            inRound = false;
        }
        if (!inRound) {
            roundStart = start;
            roundEnd = end;
            inRound = true;
        } else {
            roundStart = Math.min(roundStart, start);
            roundEnd = Math.max(roundEnd, end);
        }
    }

    private static Histogram newHistogram() {
        return new Histogram(TimeUnit.MINUTES.toNanos(5), 3);
    }

    /** {@code target}, with the chosen statements of its connections timed. */
    DataSource wrap(DataSource target) {
        return JdbcProxies.wrap(target, sql -> !which.test(sql) ? null : (method, args, invocation) -> {
            if (!method.getName().startsWith("execute")) {
                return invocation.proceed();
            }
            long start = System.nanoTime();
            try {
                return invocation.proceed();
            } finally {
                record(start, System.nanoTime());
            }
        });
    }
}
