package dev.pglock.core.internal;

import dev.pglock.core.LockDatabaseException;
import java.sql.Connection;
import java.sql.SQLException;
import java.util.List;
import java.time.Duration;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.Executor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import javax.sql.DataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/** JDBC helpers shared by the modes. */
public final class Jdbc {

    private static final Logger log = LoggerFactory.getLogger(Jdbc.class);

    private Jdbc() {
    }

    /**
     * Checks that the connection is PostgreSQL, so a wrong DataSource fails when the client is built
     * rather than at the first lock.
     *
     * @throws IllegalArgumentException when it is another database
     */
    public static void requirePostgres(Connection connection) throws SQLException {
        String product = connection.getMetaData().getDatabaseProductName();
        if (!"PostgreSQL".equals(product)) {
            throw new IllegalArgumentException("dataSource must be a PostgreSQL DataSource, but it is " + product
                    + " (" + connection.getMetaData().getURL() + "); pglock keeps its locks in PostgreSQL only");
        }
    }

    /** Logged once: a driver that keeps statements on the server cannot be told otherwise (see planEveryRun). */
    private static final java.util.concurrent.atomic.AtomicBoolean toldPlannedOnce =
            new java.util.concurrent.atomic.AtomicBoolean();

    /**
     * Has the server plan {@code statement} for its own parameters at every run, rather than keep
     * one plan for all its runs. pgjdbc keeps a statement on the server from its fifth run, and
     * PostgreSQL then settles on a generic plan, made without the parameters' values. For a statement
     * that takes its keys as arrays, that plan cannot know how many keys an array holds (it assumes
     * ten) and can look each row up with the whole array again: a heartbeat statement of 5,000 locks
     * took 1.16 s with such a plan against 26 ms, and about 1 ms to plan. A hint only: when the
     * driver is not pgjdbc, or a wrapper will not unwrap to it, nothing changes, and that is logged once.
     */
    public static void planEveryRun(java.sql.PreparedStatement statement) {
        try {
            if (statement.isWrapperFor(org.postgresql.PGStatement.class)) {
                statement.unwrap(org.postgresql.PGStatement.class).setPrepareThreshold(0);
                return;
            }
        } catch (SQLException | RuntimeException e) {
            log.debug("could not reach pgjdbc's statement to plan it at every run: {}", e.toString());
        }
        if (toldPlannedOnce.compareAndSet(false, true)) {
            log.info("the JDBC statement is not pgjdbc's, or does not unwrap to it ({}): statements with many keys"
                    + " may run on a plan made for other keys, which can be slow", statement.getClass().getName());
        }
    }

    /**
     * Borrows a connection, waiting at most {@code timeout} whatever the pool's own timeout is. A
     * connection that arrives after we gave up is closed at once.
     */
    public static Connection borrow(DataSource dataSource, Duration timeout, Executor executor, String purpose) {
        return borrow(dataSource, timeout, executor, purpose, null);
    }

    /**
     * The same; when the borrow ran out (or the caller was interrupted) and its connection arrives
     * later, that connection completes {@code late} when not null (whoever waits on it then owns
     * it and must close it), else it goes back to its pool at once.
     * {@code late} never completes when the borrow returned in time, or failed.
     */
    public static Connection borrow(DataSource dataSource, Duration timeout, Executor executor, String purpose,
            CompletableFuture<Connection> late) {
        CompletableFuture<Connection> future = CompletableFuture.supplyAsync(() -> {
            try {
                return dataSource.getConnection();
            } catch (SQLException e) {
                throw new LockDatabaseException("cannot get a connection for " + purpose + ": " + e.getMessage(), e);
            }
        }, executor);
        try {
            return future.get(timeout.toNanos(), TimeUnit.NANOSECONDS);
        } catch (TimeoutException e) {
            future.thenAccept(arrived -> handOffLate(arrived, late));
            throw new LockDatabaseException("no connection from the DataSource within " + timeout
                    + " (connection wait timeout) for " + purpose + ": the pool is exhausted or the database does"
                    + " not answer. Each waiting acquire uses a connection of its own until it releases its lock;"
                    + " make the pool larger or the connection wait timeout longer", null);
        } catch (ExecutionException e) {
            if (e.getCause() instanceof LockDatabaseException lde) {
                throw lde;
            }
            throw new LockDatabaseException("cannot get a connection for " + purpose + ": " + e.getCause(), e.getCause());
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            future.thenAccept(arrived -> handOffLate(arrived, late));
            throw new LockDatabaseException("interrupted while waiting for a connection for " + purpose, e);
        }
    }

    /** A connection that came after its borrower gave up: to {@code late} if that still wants it, else back to its pool. */
    private static void handOffLate(Connection arrived, CompletableFuture<Connection> late) {
        if (late == null || !late.complete(arrived)) {
            closeQuietly(arrived);
        }
    }

    /**
     * Whether {@code e} means the connection's backend is gone (ended by an operator or a restart, or
     * its connection cut) rather than silent: another connection may serve at once. Not a network
     * timeout, which another try would only wait out again. Asked before the connection is aborted.
     */
    public static boolean backendEnded(SQLException e, Connection connection) {
        return isConnectionFailure(e, connection) && !timedOut(e);
    }

    /**
     * Whether {@code e} says the connection was given up on because the network went silent (a read
     * waited the socket's timeout out): its backend may well be alive still, with its session's state.
     */
    public static boolean wentSilent(SQLException e, Connection connection) {
        return isConnectionFailure(e, connection) && timedOut(e);
    }

    /** Whether {@code e} came of a network timeout (a read that waited the socket's timeout out). */
    private static boolean timedOut(SQLException e) {
        for (Throwable cause = e; cause != null; cause = cause.getCause()) {
            if (cause instanceof java.net.SocketTimeoutException) {
                return true;
            }
        }
        return false;
    }

    /**
     * Whether the exception means the session is gone (network, server restart, terminated backend):
     * its session-level state, advisory locks included, is gone with it.
     */
    public static boolean isConnectionFailure(SQLException e, Connection connection) {
        String state = e.getSQLState();
        if (state != null && (state.startsWith("08") || state.equals("57P01") || state.equals("57P02")
                || state.equals("57P03"))) {
            return true;
        }
        try {
            return connection.isClosed();
        } catch (SQLException ignored) {
            return true;
        }
    }

    /**
     * Closes (gives back) a connection, never throwing: a failure is logged at debug. Unchecked ones
     * too: HikariCP's close threw a NullPointerException on a connection aborted a moment before
     * (its reset of the network timeout raced the pool's eviction of that connection), which made a
     * client's close() fail halfway.
     */
    public static void closeQuietly(Connection connection) {
        if (connection == null) {
            return;
        }
        try {
            connection.close();
        } catch (SQLException | RuntimeException e) {
            log.debug("closing a connection failed", e);
        }
    }

    /**
     * Runs a trivial statement on the first idle one of {@code sessions}, to see that the database
     * answers; a busy session is answering already and is skipped, so this never waits behind a caller.
     *
     * @return why the database did not answer; null when it did, or when every session was busy or none is open
     */
    public static String pingIdle(List<LockSession> sessions) {
        for (LockSession session : sessions) {
            try {
                Boolean answered = session.callIfIdle(c -> {
                    try (java.sql.Statement st = c.createStatement()) {
                        st.execute("SELECT 1");
                        return true;
                    }
                });
                if (answered != null) {
                    return null;
                }
            } catch (SQLException | RuntimeException e) {
                return session + " did not answer: " + e.getMessage();
            }
        }
        return null;
    }

    /**
     * Ends the physical session (the server then drops every lock it held) and hands the dead
     * connection back, so a pool counts it free and evicts it instead of reusing the session. Used
     * when a connection may still hold locks we could not release.
     */
    public static void abortQuietly(Connection connection) {
        if (connection == null) {
            return;
        }
        try {
            connection.abort(Runnable::run);
        } catch (SQLException | RuntimeException e) {
            log.debug("aborting a connection failed", e);
        }
        closeQuietly(connection);
    }
}
