package dev.pglock.core.lease;

import dev.pglock.core.internal.Jdbc;
import dev.pglock.core.internal.NotificationPoll;
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
 * One LISTEN connection per client, shared by the waiters that are not in a {@link WaitLine} (shared
 * locks, callers beyond the lines' bound, callers whose line connection failed): a release's NOTIFY
 * (sent in the same statement as the release) wakes the waiters of that key at once. Opened when the
 * first caller has to wait; listening only while someone waits (and a second after; the waiter ids
 * stay registered longer, below); re-opened after a failure, when every waiter is woken to re-check
 * because notifications sent meanwhile were missed. Waiters never depend on it alone: they also
 * re-check when the holder's lease ends.
 *
 * <p><b>Who gets a NOTIFY.</b> PostgreSQL serialises every committing transaction that sends a
 * NOTIFY (one global lock, held across the commit's flush), which halved the throughput of
 * concurrent releases when each one notified. So a release notifies only when someone waits for
 * its key: this connection holds a session-level shared advisory lock on the key's
 * {@linkplain #waiterLockId waiter id} for as long as a waiter of this client wants the key (and a
 * few seconds after, so a client that waits again and again registers once), and the release
 * statement notifies only when it cannot take that id's transaction-level lock exclusively. No
 * wake-up is lost: a registration that comes first makes the release notify; a release that comes
 * first holds its exclusive lock until it has committed, so the registration waits for that commit
 * and the waiter's next attempt, which always follows its registration, sees the key released.
 */
final class LeaseListener {

    private static final Logger log = LoggerFactory.getLogger(LeaseListener.class);
    private static final int POLL_MILLIS = 500;

    /** How long a key stays registered after its last waiter left. */
    private static final long KEEP_REGISTERED_NANOS = TimeUnit.SECONDS.toNanos(5);
    private static final String REGISTER = "SELECT count(pg_advisory_lock_shared(id)) FROM unnest(?::bigint[]) AS id";
    private static final String UNREGISTER = "SELECT count(pg_advisory_unlock_shared(id)) FROM unnest(?::bigint[]) AS id";
    private static final long VALIDATE_NANOS = TimeUnit.SECONDS.toNanos(5);
    /**
     * How long the connection listens after its last waiter left. PostgreSQL wakes every backend
     * that listens in the database at each notifying commit, whatever the channel: an idle listener
     * costs the server a wake-up per release of any key (and at a cold start of many clients, whose
     * first waits go through here, kept them all waking at each release for seconds).
     */
    private static final long LISTEN_AFTER_LAST_WAITER_NANOS = TimeUnit.SECONDS.toNanos(1);

    /** A waiting caller: notified by NOTIFY, or by a reconnect. */
    static final class Waiter {
        private final Semaphore signals = new Semaphore(0);
        /**
         * Set when {@link #register} returned before the key's waiter id was in place: the waiter has
         * attempted since, so the registration, once it is in place, must wake it (a release that
         * committed in between found nobody registered and sent no NOTIFY). Guarded by the state lock.
         */
        private boolean registeredLate;

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
    /** Ends the listener thread's poll: an empty notification on the channel, sent through a lock session. */
    private final Runnable wake;
    /** The lease namespace, part of each waiter id. */
    private final String namespace;
    /** Hashes (channel, namespace, key) to the waiter id a release checks; see {@link #waiterLockId}. */
    private volatile dev.pglock.core.advisory.AdvisoryKeyHasher waiterIds;
    /**
     * Keys whose waiter id this connection holds now, with when a waiter last wanted each
     * (System.nanoTime). Written by the listener thread only; read by waiters to skip a registration.
     */
    private final ConcurrentHashMap<String, Long> registered = new ConcurrentHashMap<>();
    /** Keys waiters asked to register; the listener thread takes them between two polls. */
    private final java.util.concurrent.ConcurrentLinkedQueue<String> toRegister =
            new java.util.concurrent.ConcurrentLinkedQueue<>();

    /** Guards {@link #listening} and {@link #thread}; waited on until LISTEN is in place. */
    private final Object state = new Object();
    /** Whether LISTEN is in place on the connection, so a waiter may attempt. */
    private boolean listening;
    /** Whether the listener thread holds a connection (listening or not); read for the metrics. */
    private volatile boolean holding;
    private Thread thread;
    /** Why the LISTEN connection failed last, until it listens again; null while it is fine. */
    private volatile String failure;
    private volatile boolean closed;

    /**
     * @param wake sends an empty notification on the channel, to end the listener thread's poll when
     *     a waiter needs a registration (never throws; a failure leaves it to the poll's end, 0.5 s)
     */
    LeaseListener(javax.sql.DataSource dataSource, Duration connectionWaitTimeout, Executor connector,
            String channel, String namespace, Runnable wake) {
        this.wake = wake;
        this.namespace = namespace;
        this.dataSource = dataSource;
        this.connectionWaitTimeout = connectionWaitTimeout;
        this.connector = connector;
        this.channel = channel;
        // The channel is the checked table name: letters, digits and _ only, so quoting is enough.
        this.listenSql = "LISTEN \"" + channel + "\"";
    }

    /** Called by the client's start(), before any wait or release: the table's schema-qualified name. */
    void identifyTable(String resolvedTable) {
        this.waiterIds = new dev.pglock.core.advisory.AdvisoryKeyHasher("pglock-lease-waiters/" + resolvedTable);
    }

    /**
     * The id whose shared advisory lock tells a release of {@code key} that someone waits for it. The
     * same for every client of the table (by its resolved, schema-qualified name) and namespace.
     */
    long waiterLockId(String key) {
        return waiterIds.lockId(namespace.length() + ":" + namespace + key);
    }

    /**
     * Registers a waiter for {@code key} and waits (until {@code deadlineNanos} at most) for LISTEN
     * and the key's waiter id to be in place, so that a release after the waiter's next attempt is
     * heard. When they cannot be had in time, the waiter is woken once they are in place (a release may
     * have committed unheard meanwhile), and re-checks when the holder's lease ends in any case.
     */
    Waiter register(String key, long deadlineNanos) throws InterruptedException {
        Waiter waiter = new Waiter();
        long until = Math.min(deadlineNanos, System.nanoTime() + connectionWaitTimeout.toNanos());
        try {
            boolean wakeListener = false;
            synchronized (state) { // with unregisterUnwanted: a key with a waiter is never given up
                waiters.computeIfAbsent(key, k -> ConcurrentHashMap.newKeySet()).add(waiter);
                if (thread == null && !closed) {
                    thread = new Thread(this::loop, "pglock-lease-listen-" + channel);
                    thread.setDaemon(true);
                    thread.start();
                }
                if (!registered.containsKey(key)) {
                    toRegister.add(key);
                    wakeListener = listening; // blocked in its poll: ended by an empty notification
                }
                state.notifyAll(); // or idle: without a connection, or with one that does not listen
            }
            if (wakeListener) {
                wake.run();
            }
            synchronized (state) {
                long left;
                while ((!listening || !registered.containsKey(key)) && !closed
                        && (left = until - System.nanoTime()) > 0) {
                    TimeUnit.NANOSECONDS.timedWait(state, left);
                }
                waiter.registeredLate = !registered.containsKey(key); // woken by registerPending once it is
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
        lastLeft = System.nanoTime();
    }

    /** When a waiter last left (System.nanoTime): one that came and went within a poll still counts. */
    private volatile long lastLeft = System.nanoTime();
    /** For tests: runs on the listener thread just before it listens again for a new waiter. */
    volatile Runnable beforeListeningAgainForTests;

    /** The listener thread: the only one that ever touches the LISTEN connection. */
    private void loop() {
        Connection connection = null;
        NotificationPoll poll = null; // polls connection, without pgjdbc's 1 ms wait after a notification
        long lastValidated = System.nanoTime();
        long lastWanted = System.nanoTime();
        try {
            while (!closed) {
                try {
                    if (!waiters.isEmpty()) {
                        lastWanted = System.nanoTime();
                    }
                    if (connection != null && waiters.isEmpty() && registered.isEmpty() && toRegister.isEmpty()) {
                        // Nobody has waited for a while: give the connection back until someone does.
                        setListening(false);
                        unlisten(connection, poll);
                        connection = null;
                        poll = null;
                        holding = false;
                    }
                    if (connection == null) {
                        if (waiters.isEmpty()) {
                            synchronized (state) { // register() wakes this at once
                                if (waiters.isEmpty() && !closed) {
                                    state.wait(POLL_MILLIS);
                                }
                            }
                            continue;
                        }
                        connection = listen();
                        holding = true;
                        poll = NotificationPoll.of(connection);
                        registered.clear(); // a new session holds no waiter id yet
                        toRegister.addAll(waiters.keySet());
                        registerPending(connection);
                        setListening(true);
                        wakeAll(); // releases while we were not listening were not heard
                    } else if (!listens() && !waiters.isEmpty()) {
                        // Listening again for a new waiter, before it attempts (it waits for this): the
                        // waiter ids this connection kept still make releases of their keys notify.
                        Runnable hook = beforeListeningAgainForTests;
                        if (hook != null) {
                            hook.run();
                        }
                        try (Statement st = connection.createStatement()) {
                            st.execute(listenSql);
                        }
                        registerPending(connection);
                        setListening(true);
                        wakeAll(); // a waiter that stopped waiting for this has attempted: releases since were not heard
                    } else if (listens() && System.nanoTime() - Math.max(lastWanted, lastLeft) > LISTEN_AFTER_LAST_WAITER_NANOS
                            && stopListeningIfUnwanted()) {
                        // Only the listening stops: the connection and the keys' waiter ids stay for a
                        // while, so a client that waits again soon needs one statement, not three.
                        try (Statement st = connection.createStatement()) {
                            st.execute("UNLISTEN *");
                        }
                        connection.unwrap(PGConnection.class).getNotifications(); // heard before: nobody wants them
                    }
                    registerPending(connection);
                    if (listens()) {
                        // Blocks until a notification or the poll ends; a waiter that needs a registration
                        // meanwhile sends an empty one on the channel (see register) to end it at once.
                        PGNotification[] notifications = poll.poll(POLL_MILLIS);
                        if (notifications != null) {
                            for (PGNotification n : notifications) {
                                Set<Waiter> set = waiters.get(n.getParameter());
                                if (set != null) {
                                    set.forEach(Waiter::signal);
                                }
                            }
                        }
                    } else {
                        synchronized (state) { // not listening: register() wakes this at once
                            if (waiters.isEmpty() && !closed) {
                                state.wait(POLL_MILLIS);
                            }
                        }
                    }
                    if (System.nanoTime() - lastValidated > VALIDATE_NANOS) {
                        lastValidated = System.nanoTime();
                        unregisterUnwanted(connection);
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
                    failure = e.getMessage();
                    setListening(false);
                    registered.clear(); // the waiter ids ended with the session
                    if (poll != null) {
                        poll.close(); // in case the pool cannot abort it and lends it out again
                    }
                    Jdbc.abortQuietly(connection);
                    connection = null;
                    poll = null;
                    holding = false;
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
            unlisten(connection, poll);
            holding = false;
        }
    }

    /**
     * Stops {@link #listening} when no waiter is registered, atomically with {@link #register}: a
     * waiter registered before waits for nothing more, one registered after waits until this thread
     * listens again.
     */
    private boolean stopListeningIfUnwanted() {
        synchronized (state) {
            if (!waiters.isEmpty()) {
                return false;
            }
            listening = false;
            return true;
        }
    }

    /**
     * Takes the waiter ids of the keys waiters asked for, in one statement, and tells the waiters.
     * Keys that waiters still want are marked wanted now.
     */
    private void registerPending(Connection connection) throws SQLException {
        long now = System.nanoTime();
        waiters.keySet().forEach(key -> registered.computeIfPresent(key, (k, since) -> now));
        if (toRegister.isEmpty()) {
            return;
        }
        java.util.Set<String> keys = new java.util.LinkedHashSet<>();
        for (String key; (key = toRegister.poll()) != null; ) {
            if (!registered.containsKey(key)) {
                keys.add(key);
            }
        }
        if (!keys.isEmpty()) {
            Long[] ids = keys.stream().map(this::waiterLockId).toArray(Long[]::new);
            try (java.sql.PreparedStatement ps = connection.prepareStatement(REGISTER)) {
                ps.setArray(1, connection.createArrayOf("bigint", ids));
                ps.executeQuery().close();
            }
            keys.forEach(key -> registered.put(key, now));
        }
        synchronized (state) {
            state.notifyAll(); // the waiters of these keys may attempt now
            // Those that stopped waiting for this have attempted already: a release since may have found
            // nobody registered, so they look again now (under the state lock, as register() marks them).
            for (String key : keys) {
                Set<Waiter> ofKey = waiters.get(key);
                if (ofKey != null) {
                    for (Waiter waiter : ofKey) {
                        if (waiter.registeredLate) {
                            waiter.registeredLate = false;
                            waiter.signal();
                        }
                    }
                }
            }
        }
    }

    /** Gives up the waiter ids of keys nobody of this client has waited for in a while. */
    private void unregisterUnwanted(Connection connection) throws SQLException {
        long now = System.nanoTime();
        java.util.List<String> unwanted;
        synchronized (state) { // a waiter registering now either came first (kept) or sees the key gone
            unwanted = registered.entrySet().stream()
                    .filter(e -> !waiters.containsKey(e.getKey()) && now - e.getValue() > KEEP_REGISTERED_NANOS)
                    .map(java.util.Map.Entry::getKey).toList();
            unwanted.forEach(registered::remove);
        }
        if (unwanted.isEmpty()) {
            return;
        }
        Long[] ids = unwanted.stream().map(this::waiterLockId).toArray(Long[]::new);
        try (java.sql.PreparedStatement ps = connection.prepareStatement(UNREGISTER)) {
            ps.setArray(1, connection.createArrayOf("bigint", ids));
            ps.executeQuery().close();
        }
    }

    private Connection listen() throws SQLException {
        Connection c = Jdbc.borrow(dataSource, connectionWaitTimeout, connector, "the LISTEN connection");
        try {
            if (!c.getAutoCommit()) {
                c.setAutoCommit(true);
            }
            // A server that stops answering must not hang LISTEN or the poll below for ever.
            c.setNetworkTimeout(connector, (int) Math.min(Integer.MAX_VALUE, Math.max(POLL_MILLIS * 4L, connectionWaitTimeout.toMillis())));
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

    private static void unlisten(Connection connection, NotificationPoll poll) {
        if (connection == null) {
            return;
        }
        if (poll != null) {
            poll.close(); // before anything else can borrow the connection
        }
        try (Statement st = connection.createStatement()) {
            st.execute("UNLISTEN *"); // the connection goes back to its pool clean
            st.execute("SELECT pg_advisory_unlock_all()"); // and without waiter ids
            Jdbc.closeQuietly(connection);
        } catch (SQLException e) {
            Jdbc.abortQuietly(connection);
        }
    }

    /** Whether LISTEN is in place now. */
    boolean listens() {
        synchronized (state) {
            return listening;
        }
    }

    /** 1 while the listener holds its LISTEN connection (someone waited lately), else 0. */
    int connections() {
        return holding ? 1 : 0;
    }

    /** Why callers waiting now cannot hear releases, or null when they can (or nobody waits). */
    String problem() {
        String why = failure;
        if (why == null || waiters.isEmpty()) {
            return null;
        }
        synchronized (state) {
            if (listening) {
                return null;
            }
        }
        return "the LISTEN connection on channel " + channel + " failed (" + why + "); it is being reopened,"
                + " and waiting callers re-check only when a holder's lease would end";
    }

    private void setListening(boolean value) {
        synchronized (state) {
            if (value) {
                failure = null;
            }
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
