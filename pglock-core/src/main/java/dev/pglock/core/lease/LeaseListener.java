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
    private final Object connecting = new Object();
    private volatile Connection connection;
    private volatile Thread thread;
    private volatile boolean closed;

    LeaseListener(javax.sql.DataSource dataSource, Duration connectionWaitTimeout, Executor connector,
            String channel) {
        this.dataSource = dataSource;
        this.connectionWaitTimeout = connectionWaitTimeout;
        this.connector = connector;
        this.channel = channel;
        // The channel is the checked table name: letters, digits, _ and . only, so quoting is enough.
        this.listenSql = "LISTEN \"" + channel + "\"";
    }

    /** Registers a waiter for {@code key} and makes sure the listener runs before the waiter's next check. */
    Waiter register(String key) {
        Waiter waiter = new Waiter();
        waiters.computeIfAbsent(key, k -> ConcurrentHashMap.newKeySet()).add(waiter);
        try {
            ensureListening();
        } catch (RuntimeException e) {
            log.warn("cannot LISTEN on channel {} ({}); waiters fall back to re-checking when leases end",
                    channel, e.getMessage());
        }
        return waiter;
    }

    void unregister(String key, Waiter waiter) {
        waiters.computeIfPresent(key, (k, set) -> {
            set.remove(waiter);
            return set.isEmpty() ? null : set;
        });
    }

    /** Whether a LISTEN connection is open now. */
    boolean isListening() {
        return connection != null;
    }

    private void ensureListening() {
        if (connection != null || closed) {
            return;
        }
        synchronized (connecting) {
            if (connection != null || closed) {
                return;
            }
            Connection c = Jdbc.borrow(dataSource, connectionWaitTimeout, connector, "the LISTEN connection");
            try {
                if (!c.getAutoCommit()) {
                    c.setAutoCommit(true);
                }
                c.unwrap(PGConnection.class); // fail now, not in the loop, when it is not pgjdbc
                try (Statement st = c.createStatement()) {
                    st.execute(listenSql);
                }
            } catch (SQLException e) {
                Jdbc.abortQuietly(c);
                throw new IllegalStateException(e.getMessage(), e);
            }
            connection = c;
            if (thread == null) {
                Thread t = new Thread(this::loop, "pglock-lease-listen");
                t.setDaemon(true);
                thread = t;
                t.start();
            }
        }
    }

    private void loop() {
        long lastValidated = System.nanoTime();
        while (!closed) {
            Connection c = connection;
            if (c == null) {
                reconnectWhileWaited();
                continue;
            }
            try {
                PGNotification[] notifications = c.unwrap(PGConnection.class).getNotifications(POLL_MILLIS);
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
                    if (!c.isValid(2)) {
                        throw new SQLException("the LISTEN connection did not answer", "08006");
                    }
                }
            } catch (SQLException e) {
                if (closed) {
                    return;
                }
                log.warn("the LISTEN connection failed ({}); re-opening it, waiters re-check meanwhile", e.getMessage());
                connection = null;
                Jdbc.abortQuietly(c);
                wakeAll();
            }
        }
    }

    private void reconnectWhileWaited() {
        try {
            if (!waiters.isEmpty()) {
                ensureListening();
                wakeAll(); // whatever was released while we were not listening
                return;
            }
        } catch (RuntimeException e) {
            log.debug("re-opening the LISTEN connection failed", e);
        }
        try {
            Thread.sleep(POLL_MILLIS); // back-off between attempts, or idle until a caller waits again
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            closed = true;
        }
    }

    private void wakeAll() {
        waiters.values().forEach(set -> set.forEach(Waiter::signal));
    }

    void close() {
        closed = true;
        Thread t = thread;
        if (t != null) {
            t.interrupt();
        }
        synchronized (connecting) {
            Connection c = connection;
            connection = null;
            if (c != null) {
                try (Statement st = c.createStatement()) {
                    st.execute("UNLISTEN *");
                    Jdbc.closeQuietly(c);
                } catch (SQLException e) {
                    Jdbc.abortQuietly(c);
                }
            }
        }
        wakeAll();
    }
}
