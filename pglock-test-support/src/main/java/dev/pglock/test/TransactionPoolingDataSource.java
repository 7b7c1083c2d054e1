package dev.pglock.test;

import java.io.PrintWriter;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.sql.Connection;
import java.sql.SQLException;
import java.sql.SQLFeatureNotSupportedException;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Logger;
import javax.sql.DataSource;

/**
 * Does to session state what PgBouncer in transaction pooling mode does: each autocommit statement a
 * client connection runs goes to the next of a few real server sessions, and only an explicit
 * transaction stays on one session until it ends. Session-level state (advisory locks, LISTEN,
 * SET) therefore does not follow the client's connection. The server sessions are real PostgreSQL
 * connections; statements are placed on them in turn so that consecutive ones differ.
 *
 * <p>It is a stand-in for PgBouncer, not PgBouncer: it does not model PgBouncer's own protocol
 * limits (prepared statements before 1.21), only where statements run.
 */
public final class TransactionPoolingDataSource implements DataSource, AutoCloseable {

    private final List<Connection> servers = new ArrayList<>();
    private final Set<Connection> inTransaction = ConcurrentHashMap.newKeySet();
    private final Set<Integer> usedBackends = ConcurrentHashMap.newKeySet();
    private final AtomicInteger next = new AtomicInteger();

    /** Opens {@code serverSessions} real sessions from {@code target}; they are the "server pool". */
    public TransactionPoolingDataSource(DataSource target, int serverSessions) throws SQLException {
        for (int i = 0; i < serverSessions; i++) {
            servers.add(target.getConnection());
        }
    }

    /** The backend pids statements ran on: more than one means session state could not follow. */
    public Set<Integer> usedBackends() {
        return Set.copyOf(usedBackends);
    }

    private synchronized Connection nextFreeServer() {
        for (int tries = 0; tries < servers.size() * 2; tries++) {
            Connection server = servers.get(Math.floorMod(next.getAndIncrement(), servers.size()));
            if (!inTransaction.contains(server)) {
                return server;
            }
        }
        throw new IllegalStateException("every server session is inside a transaction");
    }

    private void recordBackend(Connection server) {
        try {
            usedBackends.add(server.unwrap(org.postgresql.PGConnection.class).getBackendPID());
        } catch (SQLException e) {
            // only bookkeeping
        }
    }

    @Override
    public Connection getConnection() {
        return (Connection) Proxy.newProxyInstance(getClass().getClassLoader(), new Class<?>[] {Connection.class},
                new ClientConnection()::invoke);
    }

    @Override
    public Connection getConnection(String username, String password) {
        return getConnection();
    }

    /** A client's connection: holds no server session except during an explicit transaction. */
    private final class ClientConnection {
        private Connection pinned;
        private boolean closed;

        Object invoke(Object proxy, Method method, Object[] args) throws Throwable {
            switch (method.getName()) {
                case "close":
                    unpin();
                    closed = true;
                    return null;
                case "isClosed":
                    return closed;
                case "abort":
                    unpin();
                    closed = true;
                    return null;
                case "getAutoCommit":
                    return pinned == null;
                case "setAutoCommit":
                    if (!(Boolean) args[0] && pinned == null) {
                        synchronized (TransactionPoolingDataSource.this) {
                            pinned = nextFreeServer();
                            inTransaction.add(pinned);
                        }
                        pinned.setAutoCommit(false);
                    } else if ((Boolean) args[0] && pinned != null) {
                        pinned.setAutoCommit(true);
                        unpin();
                    }
                    return null;
                case "commit":
                case "rollback":
                    if (pinned != null) {
                        call(pinned, method, args);
                    }
                    return null;
                case "unwrap":
                case "isWrapperFor":
                    // Nothing of a server session may be reached through a client connection.
                    if (method.getName().equals("isWrapperFor")) {
                        return false;
                    }
                    throw new SQLException("a transaction-pooled connection cannot be unwrapped");
                case "setNetworkTimeout":
                case "getNetworkTimeout":
                case "setReadOnly":
                case "clearWarnings":
                    return method.getReturnType() == int.class ? 0 : null;
                default:
                    Connection server = pinned != null ? pinned : nextFreeServer();
                    recordBackend(server);
                    return call(server, method, args);
            }
        }

        private void unpin() {
            if (pinned != null) {
                inTransaction.remove(pinned);
                pinned = null;
            }
        }
    }

    private static Object call(Connection server, Method method, Object[] args) throws Throwable {
        try {
            return method.invoke(server, args);
        } catch (InvocationTargetException e) {
            throw e.getCause();
        }
    }

    @Override
    public void close() throws SQLException {
        for (Connection server : servers) {
            server.close();
        }
    }

    @Override
    public PrintWriter getLogWriter() {
        return null;
    }

    @Override
    public void setLogWriter(PrintWriter out) {
    }

    @Override
    public void setLoginTimeout(int seconds) {
    }

    @Override
    public int getLoginTimeout() {
        return 0;
    }

    @Override
    public Logger getParentLogger() throws SQLFeatureNotSupportedException {
        throw new SQLFeatureNotSupportedException();
    }

    @Override
    public <T> T unwrap(Class<T> iface) throws SQLException {
        throw new SQLException("not a wrapper");
    }

    @Override
    public boolean isWrapperFor(Class<?> iface) {
        return false;
    }
}
