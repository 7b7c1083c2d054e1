package dev.pglock.benchmarks;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.SQLException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CopyOnWriteArrayList;
import javax.sql.DataSource;

/**
 * Records the prepared statements a lock client executes through a DataSource it wraps, each with
 * the parameters set on it, so that they can be run again without the client: what the client's SQL
 * costs by itself, measured beside the client in the same run. Only the SQL text and the parameter
 * calls are kept, of the statements the recording thread runs; the client runs on the real connections.
 */
final class SqlRecorder {

    /** One executed statement: its text, and the calls that set its parameters, in order. */
    record Recorded(String sql, List<Setter> parameters) {

        /** Prepares it on {@code connection} with the same parameters. */
        PreparedStatement prepare(Connection connection) throws SQLException {
            PreparedStatement ps = connection.prepareStatement(sql);
            for (Setter setter : parameters) {
                try {
                    setter.method().invoke(ps, setter.args());
                } catch (IllegalAccessException | InvocationTargetException e) {
                    throw new SQLException("could not set a recorded parameter of " + sql, e);
                }
            }
            return ps;
        }
    }

    /** A {@code setXxx(index, value)} call on a PreparedStatement. */
    record Setter(Method method, Object[] args) {
    }

    private final List<Recorded> executed = new CopyOnWriteArrayList<>();
    /** The thread whose statements are recorded, or null: a client's own threads (its heartbeat, its purge) are not. */
    private volatile Thread recording;

    /** Starts recording afresh the statements this thread executes. */
    void start() {
        executed.clear();
        recording = Thread.currentThread();
    }

    /** Stops recording; returns what was executed since {@link #start}, in order. */
    List<Recorded> stop() {
        recording = null;
        return List.copyOf(executed);
    }

    /** {@code target}, with the statements of its connections recorded while recording. */
    DataSource wrap(DataSource target) {
        return JdbcProxies.wrap(target, sql -> {
            List<Setter> parameters = new ArrayList<>();
            return (method, args, invocation) -> {
                Object result = invocation.proceed();
                if (method.getName().startsWith("set") && args != null && args.length >= 2 && args[0] instanceof Integer) {
                    parameters.add(new Setter(method, args.clone()));
                } else if (method.getName().equals("clearParameters")) {
                    parameters.clear();
                } else if (method.getName().startsWith("execute") && recording == Thread.currentThread()) {
                    executed.add(new Recorded(sql, List.copyOf(parameters)));
                }
                return result;
            };
        });
    }
}
