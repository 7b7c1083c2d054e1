package dev.pglock.test;

import java.io.PrintWriter;
import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.sql.SQLFeatureNotSupportedException;
import java.sql.Statement;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.logging.Logger;
import javax.sql.DataSource;

/**
 * Wraps a real DataSource and counts what the code under test does with it: connections borrowed
 * now and at the peak, and every SQL text executed. Connections and statements are the real ones;
 * only the counting is added.
 */
public final class CountingDataSource implements DataSource {

    private final DataSource target;
    private final AtomicInteger open = new AtomicInteger();
    private final AtomicInteger peak = new AtomicInteger();
    private final AtomicInteger aborted = new AtomicInteger();
    private final List<String> executed = new CopyOnWriteArrayList<>();
    private final List<String> failures = new CopyOnWriteArrayList<>();

    public CountingDataSource(DataSource target) {
        this.target = target;
    }

    /** Connections borrowed and not yet closed. */
    public int openConnections() {
        return open.get();
    }

    /** The most connections borrowed at once since the last {@link #resetPeak()}. */
    public int peakConnections() {
        return peak.get();
    }

    /**
     * Connections ended with {@code abort()} rather than closed: what the server ends only once it
     * notices, so their session-level locks outlive the call that aborted them by a moment.
     */
    public int abortedConnections() {
        return aborted.get();
    }

    public void resetPeak() {
        peak.set(open.get());
    }

    /** Every SQL text executed, in order, since the last {@link #clearExecuted()}. */
    public List<String> executed() {
        return List.copyOf(executed);
    }

    /** How many executed statements contain the fragment. */
    public long executedContaining(String fragment) {
        return executed.stream().filter(sql -> sql.contains(fragment)).count();
    }

    /** How many statements failed with this SQLState (such as 40P01, a deadlock) through this DataSource. */
    public long failuresWithState(String sqlState) {
        return failures.stream().filter(sqlState::equals).count();
    }

    public void clearExecuted() {
        executed.clear();
    }

    @Override
    public Connection getConnection() throws SQLException {
        return track(target.getConnection());
    }

    @Override
    public Connection getConnection(String username, String password) throws SQLException {
        return track(target.getConnection(username, password));
    }

    private Connection track(Connection connection) {
        peak.accumulateAndGet(open.incrementAndGet(), Math::max);
        return (Connection) Proxy.newProxyInstance(getClass().getClassLoader(), new Class<?>[] {Connection.class},
                new ConnectionHandler(connection));
    }

    private final class ConnectionHandler implements InvocationHandler {
        private final Connection connection;
        private boolean closed;

        ConnectionHandler(Connection connection) {
            this.connection = connection;
        }

        @Override
        public Object invoke(Object proxy, Method method, Object[] args) throws Throwable {
            String name = method.getName();
            if (name.equals("close") || name.equals("abort")) {
                if (name.equals("abort")) {
                    aborted.incrementAndGet();
                }
                synchronized (this) {
                    if (!closed) {
                        closed = true;
                        open.decrementAndGet();
                    }
                }
            } else if (name.equals("unwrap") && ((Class<?>) args[0]).isInstance(connection)) {
                return connection;
            }
            Object result = invokeTarget(connection, method, args);
            if (result instanceof PreparedStatement ps) {
                String sql = (String) args[0];
                return Proxy.newProxyInstance(getClass().getClassLoader(), new Class<?>[] {PreparedStatement.class},
                        (p, m, a) -> {
                            if (m.getName().startsWith("execute")) {
                                executed.add(sql);
                            }
                            return invokeTarget(ps, m, a);
                        });
            }
            if (result instanceof Statement st) {
                return Proxy.newProxyInstance(getClass().getClassLoader(), new Class<?>[] {Statement.class},
                        (p, m, a) -> {
                            if (m.getName().startsWith("execute") && a != null && a.length > 0 && a[0] instanceof String s) {
                                executed.add(s);
                            }
                            return invokeTarget(st, m, a);
                        });
            }
            return result;
        }
    }

    private Object invokeTarget(Object target, Method method, Object[] args) throws Throwable {
        try {
            return method.invoke(target, args);
        } catch (InvocationTargetException e) {
            if (e.getCause() instanceof java.sql.SQLException sql && sql.getSQLState() != null) {
                failures.add(sql.getSQLState());
            }
            throw e.getCause();
        }
    }

    @Override
    public PrintWriter getLogWriter() throws SQLException {
        return target.getLogWriter();
    }

    @Override
    public void setLogWriter(PrintWriter out) throws SQLException {
        target.setLogWriter(out);
    }

    @Override
    public void setLoginTimeout(int seconds) throws SQLException {
        target.setLoginTimeout(seconds);
    }

    @Override
    public int getLoginTimeout() throws SQLException {
        return target.getLoginTimeout();
    }

    @Override
    public Logger getParentLogger() throws SQLFeatureNotSupportedException {
        return target.getParentLogger();
    }

    @Override
    public <T> T unwrap(Class<T> iface) throws SQLException {
        if (iface.isInstance(this)) {
            return iface.cast(this);
        }
        return target.unwrap(iface);
    }

    @Override
    public boolean isWrapperFor(Class<?> iface) throws SQLException {
        return iface.isInstance(this) || target.isWrapperFor(iface);
    }
}
