package dev.pglock.test;

import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.lang.reflect.Proxy;
import java.sql.Connection;
import java.sql.PreparedStatement;
import javax.sql.DataSource;

/**
 * Runs a test's code at chosen points of the statements the code under test prepares on a real
 * DataSource: just before a statement is prepared (to pause there, or fail in its place), and just
 * after it ran. Connections and statements are the real ones (unwrap reaches the driver's).
 */
public interface StatementHooks {

    /** Runs before {@code sql} is prepared; what it throws, the prepare throws. */
    default void beforePrepare(String sql) throws Exception {
    }

    /** Runs after a statement prepared from {@code sql} ran (any execute method), before its caller reads the result. */
    default void afterExecute(String sql) throws Exception {
    }

    /** {@code target}, with {@code hooks} around every statement prepared on its connections. */
    static DataSource around(DataSource target, StatementHooks hooks) {
        ClassLoader loader = StatementHooks.class.getClassLoader();
        return (DataSource) Proxy.newProxyInstance(loader, new Class<?>[] {DataSource.class}, (p, m, args) -> {
            Object result = invoke(target, m, args);
            if (!(result instanceof Connection connection)) {
                return result;
            }
            return Proxy.newProxyInstance(loader, new Class<?>[] {Connection.class}, (cp, cm, cargs) -> {
                boolean preparing = cm.getName().equals("prepareStatement") && cargs[0] instanceof String;
                if (preparing) {
                    hooks.beforePrepare((String) cargs[0]);
                }
                Object made = invoke(connection, cm, cargs);
                if (!preparing || !(made instanceof PreparedStatement statement)) {
                    return made;
                }
                String sql = (String) cargs[0];
                return Proxy.newProxyInstance(loader, new Class<?>[] {PreparedStatement.class}, (sp, sm, sargs) -> {
                    Object ran = invoke(statement, sm, sargs);
                    if (sm.getName().startsWith("execute")) {
                        hooks.afterExecute(sql);
                    }
                    return ran;
                });
            });
        });
    }

    private static Object invoke(Object target, Method method, Object[] args) throws Throwable {
        try {
            return method.invoke(target, args);
        } catch (InvocationTargetException e) {
            throw e.getCause();
        }
    }
}
