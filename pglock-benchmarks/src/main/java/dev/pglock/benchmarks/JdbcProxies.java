package dev.pglock.benchmarks;

import java.lang.reflect.InvocationHandler;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.sql.Connection;
import java.sql.PreparedStatement;
import javax.sql.DataSource;

/**
 * Pass-through proxies of a DataSource, its connections and their prepared statements, for the
 * benchmark's instruments ({@link StatementTimer}, {@link SqlRecorder}): the client under test runs
 * on the real pool and the real connections, and an instrument sees the calls on the statements it
 * asks for. {@code unwrap} to a driver or pool class reaches the real object.
 */
final class JdbcProxies {

    private JdbcProxies() {
    }

    /** The call being made on the real object. */
    interface Invocation {
        Object proceed() throws Throwable;
    }

    /** Sees each call on one prepared statement, and makes it. */
    interface Calls {
        Object call(Method method, Object[] args, Invocation invocation) throws Throwable;
    }

    /** What to see of a statement about to be prepared: null leaves it unwrapped. */
    interface Statements {
        Calls prepared(String sql);
    }

    /** {@code target}, with the prepared statements of its connections handed to {@code statements}. */
    static DataSource wrap(DataSource target, Statements statements) {
        return proxy(DataSource.class, target, (method, args, invocation) -> {
            Object result = invocation.proceed();
            if (!(result instanceof Connection connection) || !method.getName().equals("getConnection")) {
                return result;
            }
            return proxy(Connection.class, connection, (m, a, call) -> {
                Object made = call.proceed();
                if (made instanceof PreparedStatement ps && m.getName().equals("prepareStatement")) {
                    Calls calls = statements.prepared((String) a[0]);
                    return calls == null ? made : proxy(PreparedStatement.class, ps, calls);
                }
                return made;
            });
        });
    }

    @SuppressWarnings("unchecked")
    private static <T> T proxy(Class<T> type, T target, Calls calls) {
        InvocationHandler handler = (proxy, method, args) -> {
            if (method.getName().equals("unwrap") && args != null && args[0] instanceof Class<?> wanted
                    && wanted.isInstance(target)) {
                return target;
            }
            return calls.call(method, args, () -> {
                try {
                    return method.invoke(target, args);
                } catch (InvocationTargetException e) {
                    throw e.getCause();
                }
            });
        };
        return (T) Proxy.newProxyInstance(JdbcProxies.class.getClassLoader(), new Class<?>[] {type}, handler);
    }
}
