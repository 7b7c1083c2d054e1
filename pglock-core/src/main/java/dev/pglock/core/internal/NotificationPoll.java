package dev.pglock.core.internal;

import java.lang.reflect.Field;
import java.sql.Connection;
import java.sql.SQLException;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.core.BaseConnection;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Waits for notifications on one pgjdbc connection, returning as soon as one has arrived.
 *
 * <p><b>Why not {@code getNotifications(timeout)} alone.</b> After pgjdbc has read a notification
 * there, it looks for more with a read whose socket timeout is 1 ms ({@code PGStream.hasMessagePending});
 * when nothing more has arrived, which is the usual case, that read waits out its millisecond. So every
 * notification reaches its caller at least 1 ms after it reached the client. Measured here (PostgreSQL
 * 15, pgjdbc 42.7, loopback): 1.1 – 1.2 ms p50 from the notifying commit returning to the listener
 * having it, and 22 – 53 µs without that read. For a lease waiter that millisecond is most of a
 * hand-off: two commits cost about 0.4 ms on the same machine.
 *
 * <p><b>What this does.</b> The driver's stream skips that read while its next check time lies in the
 * future (it sets one itself after a read that found nothing). Before each poll this sets it to the far
 * future, so the poll returns with what has arrived: bytes the driver has buffered or the socket holds
 * still count ({@code available()}; over SSL only what has been decrypted), and anything later waits in
 * the socket for the next poll, which reads it at once. Nothing is lost or reordered. {@link #close()}
 * puts the check time back before the connection returns to its pool.
 *
 * <p>It reaches into two non-public fields of pgjdbc by reflection. When they are not there (another
 * driver version) or cannot be reached, it polls as pgjdbc does, a millisecond later, and says so once
 * in the log: correctness never depends on it.
 */
public final class NotificationPoll implements AutoCloseable {

    private static final Logger log = LoggerFactory.getLogger(NotificationPoll.class);

    /** {@code QueryExecutorBase.pgStream}, {@code PGStream.nextStreamAvailableCheckTime} and
     * {@code PGStream.minStreamAvailableCheckDelay}; null when this driver has other internals. */
    private static final Field[] FIELDS = fields();

    private final PGConnection connection;
    /** The connection's PGStream, or null when the 1 ms read cannot be skipped. */
    private final Object stream;

    private NotificationPoll(PGConnection connection, Object stream) {
        this.connection = connection;
        this.stream = stream;
    }

    /**
     * @param connection a pgjdbc connection (or a pool's wrapper of one) used for nothing but
     *     LISTEN and statements of its listener thread while this polls it
     * @throws SQLException when it is not pgjdbc
     */
    public static NotificationPoll of(Connection connection) throws SQLException {
        PGConnection pg = connection.unwrap(PGConnection.class);
        Object stream = null;
        if (FIELDS != null) {
            try {
                if (connection.isWrapperFor(BaseConnection.class)) {
                    Object candidate = FIELDS[0].get(connection.unwrap(BaseConnection.class).getQueryExecutor());
                    // The skip only works while the driver honours a check time at all.
                    if (candidate != null && FIELDS[2].getInt(candidate) != 0) {
                        stream = candidate;
                    }
                }
            } catch (SQLException | ReflectiveOperationException | RuntimeException e) {
                log.debug("pgjdbc's notification wait cannot be shortened on this connection", e);
            }
        }
        return new NotificationPoll(pg, stream);
    }

    /**
     * Like {@link PGConnection#getNotifications(int)}: waits up to {@code timeoutMillis} (0: until one
     * comes) for notifications and returns those that have arrived, or null or an empty array.
     */
    public PGNotification[] poll(int timeoutMillis) throws SQLException {
        if (stream != null) {
            try {
                FIELDS[1].setLong(stream, Long.MAX_VALUE);
            } catch (IllegalAccessException e) {
                throw new IllegalStateException(e); // setAccessible succeeded when the fields were found
            }
        }
        return connection.getNotifications(timeoutMillis);
    }

    /** For tests: true when a poll returns without pgjdbc's 1 ms look for more. */
    boolean skipsTheDriversWait() {
        return stream != null;
    }

    /** Gives the driver its own check time back (the connection may go back to a pool next). */
    @Override
    public void close() {
        if (stream != null) {
            try {
                FIELDS[1].setLong(stream, 0L);
            } catch (IllegalAccessException | RuntimeException e) {
                log.debug("could not reset pgjdbc's check time", e);
            }
        }
    }

    private static Field[] fields() {
        try {
            Field pgStream = Class.forName("org.postgresql.core.QueryExecutorBase").getDeclaredField("pgStream");
            Class<?> streamClass = Class.forName("org.postgresql.core.PGStream");
            Field next = streamClass.getDeclaredField("nextStreamAvailableCheckTime");
            Field delay = streamClass.getDeclaredField("minStreamAvailableCheckDelay");
            if (next.getType() != long.class || delay.getType() != int.class) {
                throw new NoSuchFieldException("nextStreamAvailableCheckTime or minStreamAvailableCheckDelay changed type");
            }
            pgStream.setAccessible(true);
            next.setAccessible(true);
            delay.setAccessible(true);
            return new Field[] {pgStream, next, delay};
        } catch (ReflectiveOperationException | RuntimeException e) {
            log.info("pgjdbc's internals differ from those pglock knows ({}): lease waiters are woken about 1 ms"
                    + " after a release's NOTIFY arrives instead of at once", e.toString());
            return null;
        }
    }
}
