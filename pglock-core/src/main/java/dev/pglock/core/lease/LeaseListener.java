package dev.pglock.core.lease;

import dev.pglock.core.internal.Jdbc;
import java.sql.Connection;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.Duration;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executor;
import java.util.concurrent.Semaphore;
import java.util.concurrent.TimeUnit;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One LISTEN connection per client, shared by all its waiters: a release's NOTIFY (sent in the
 * same statement as the release) wakes the waiters of that key at once. Opened when the first
 * caller has to wait; re-opened after a failure, when every waiter is woken to re-check because
 * notifications sent meanwhile were missed. Waiters never depend on it alone: they also re-check
 * when the holder's lease ends.
 */
final class LeaseListener {

    private static final Logger log = LoggerFactory.getLogger(LeaseListener.class);
    private static final int POLL_MILLIS = 500;
    private static final long VALIDATE_NANOS = TimeUnit.SECONDS.toNanos(5);

    /** A waiting caller: notified by NOTIFY, or by a reconnect. */
    static final class Waiter {
        private final Semaphore signals = new Semaphore(0);

        /** Waits up to {@code nanos} for a signal; true when one came. */
        boolean await(long nanos) throws InterruptedException {
            return signals.tryAcquire(nanos, TimeUnit.NANOSECONDS);
        }

        void signal() {
            signals.release();
        }
    }

    private final javax.sql.DataSource dataSource;
    private final Duration connectionWaitTimeout;
    private final Executor connector;
    private final String channel;
    private final String listenSql;
    private final ConcurrentHashMap<String, Set<Waiter>> waiters = new ConcurrentHashMap<>();
    /** Guards {@link #listening} and {@link #thread}; waited on until LISTEN is in place. */
    private final Object state = new Object();
    private boolean listening;
    private Thread thread;
    private volatile boolean closed;

    LeaseListener(javax.sql.DataSource dataSource, Duration connectionWaitTimeout, Executor connector,
            String channel) {
        this.dataSource = dataSource;
        this.connectionWaitTimeout = connectionWaitTimeout;
        this.connector = connector;
        this.channel = channel;
        // The channel is the checked table name: letters, digits and _ only, so quoting is enough.
        this.listenSql = "LISTEN \"" + channel + "\"";
    }

    /**
     * Registers a waiter for {@code key} and waits (until {@code deadlineNanos} at most) for LISTEN
     * to be in place, so that a release after the waiter's next attempt is heard. When LISTEN cannot
     * be had in time, the waiter still re-checks when the holder's lease ends.
     */
    Waiter register(String key, long deadlineNanos) throws InterruptedException {
        Waiter waiter = new Waiter();
        waiters.computeIfAbsent(key, k -> ConcurrentHashMap.newKeySet()).add(waiter);
        long until = Math.min(deadlineNanos, System.nanoTime() + connectionWaitTimeout.toNanos());
        try {
            synchronized (state) {
                if (thread == null && !closed) {
                    thread = new Thread(this::loop, "pglock-lease-listen-" + channel);
                    thread.setDaemon(true);
                    thread.start();
                }
                long left;
                while (!listening && !closed && (left = until - System.nanoTime()) > 0) {
                    TimeUnit.NANOSECONDS.timedWait(state, left);
                }
            }
        } catch (InterruptedException e) {
            unregister(key, waiter); // nobody will wait on it: it must not stay registered
            throw e;
        }
        return waiter;
    }

    /** How many waiters are registered, over all keys. */
    int waiterCount() {
        return waiters.values().stream().mapToInt(Set::size).sum();
    }

    void unregister(String key, Waiter waiter) {
        waiters.computeIfPresent(key, (k, set) -> {
            set.remove(waiter);
            return set.isEmpty() ? null : set;
        });
    }

    /** The listener thread: the only one that ever touches the LISTEN connection. */
    private void loop() {
        Connection connection = null;
        long lastValidated = System.nanoTime();
        try {
            while (!closed) {
                try {
                    if (connection == null) {
                        if (waiters.isEmpty()) {
                            Thread.sleep(POLL_MILLIS); // nobody waits: do not hold a connection for nothing
                            continue;
                        }
                        connection = listen();
                        setListening(true);
                        wakeAll(); // releases while we were not listening were not heard
                    }
                    PGNotification[] notifications =
                            connection.unwrap(PGConnection.class).getNotifications(POLL_MILLIS);
                    if (notifications != null) {
                        for (PGNotification n : notifications) {
                            Set<Waiter> set = waiters.get(n.getParameter());
                            if (set != null) {
                                set.forEach(Waiter::signal);
                            }
                        }
                    }
                    if (System.nanoTime() - lastValidated > VALIDATE_NANOS && !waiters.isEmpty()) {
                        lastValidated = System.nanoTime();
                        if (!connection.isValid(2)) {
                            throw new SQLException("the LISTEN connection did not answer", "08006");
                        }
                    }
                } catch (InterruptedException e) {
                    return;
                } catch (Throwable e) {
                    if (closed) {
                        return;
                    }
                    log.warn("LISTEN on channel {} failed ({}); retrying, waiters re-check meanwhile", channel,
                            e.getMessage());
                    setListening(false);
                    Jdbc.abortQuietly(connection);
                    connection = null;
                    wakeAll();
                    try {
                        Thread.sleep(POLL_MILLIS);
                    } catch (InterruptedException interrupted) {
                        return;
                    }
                }
            }
        } finally {
            setListening(false);
            unlisten(connection);
        }
    }

    private Connection listen() throws SQLException {
        Connection c = Jdbc.borrow(dataSource, connectionWaitTimeout, connector, "the LISTEN connection");
        try {
            if (!c.getAutoCommit()) {
                c.setAutoCommit(true);
            }
            // A server that stops answering must not hang LISTEN or the poll below for ever.
            c.setNetworkTimeout(connector, (int) Math.max(POLL_MILLIS * 4L, connectionWaitTimeout.toMillis()));
            c.unwrap(PGConnection.class); // not pgjdbc: fail here, with the reason
            try (Statement st = c.createStatement()) {
                st.execute(listenSql);
            }
            return c;
        } catch (SQLException | RuntimeException e) {
            Jdbc.abortQuietly(c);
            throw e;
        }
    }

    private static void unlisten(Connection connection) {
        if (connection == null) {
            return;
        }
        try (Statement st = connection.createStatement()) {
            st.execute("UNLISTEN *"); // the connection goes back to its pool clean
            Jdbc.closeQuietly(connection);
        } catch (SQLException e) {
            Jdbc.abortQuietly(connection);
        }
    }

    private void setListening(boolean value) {
        synchronized (state) {
            listening = value;
            state.notifyAll();
        }
    }

    private void wakeAll() {
        waiters.values().forEach(set -> set.forEach(Waiter::signal));
    }

    /** Stops the listener thread, which gives its connection back, and wakes every waiter. */
    void close() {
        Thread t;
        synchronized (state) {
            closed = true;
            state.notifyAll();
            t = thread;
        }
        wakeAll();
        if (t != null) {
            t.interrupt();
            try {
                t.join(POLL_MILLIS * 4L);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }
}
