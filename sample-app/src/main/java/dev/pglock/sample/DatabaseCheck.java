package dev.pglock.sample;

import java.io.PrintStream;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
/**
 * Checks the PostgreSQL the sample runs against before Spring starts, so a database that does not
 * answer is one paragraph, never a stack trace: {@code spring.datasource.url} (argument, system
 * property or {@code SPRING_DATASOURCE_URL}, with the matching username and password), else the
 * local server the README assumes, 127.0.0.1:5432 as user postgres. It only checks: the
 * application takes its DataSource from {@code spring.datasource.*} like any Boot application, and
 * nothing here starts a database (Testcontainers belongs to tests, not to an application's runtime).
 */
final class DatabaseCheck {

    static final String LOCAL_URL = "jdbc:postgresql://127.0.0.1:5432/postgres";

    private DatabaseCheck() {
    }

    /** The spring.datasource.* properties to use, or empty (after printing how to fix it) when none answers. */
    static Optional<Map<String, Object>> check(String[] args, PrintStream err) {
        String explicit = setting(args, "spring.datasource.url", "SPRING_DATASOURCE_URL");
        if (explicit != null) {
            String user = setting(args, "spring.datasource.username", "SPRING_DATASOURCE_USERNAME");
            String password = setting(args, "spring.datasource.password", "SPRING_DATASOURCE_PASSWORD");
            String problem = probe(explicit, user, password);
            if (problem == null) {
                return Optional.of(properties(explicit, user == null ? "" : user, password == null ? "" : password));
            }
            err.printf("""

                    The pglock sample cannot reach the PostgreSQL you named: spring.datasource.url=%s
                    (user %s): %s
                    Check the URL, SPRING_DATASOURCE_USERNAME and SPRING_DATASOURCE_PASSWORD, or unset the URL to
                    use a local server on 127.0.0.1:5432.

                    """, explicit, user, problem);
            return Optional.empty();
        }
        String localProblem = probe(LOCAL_URL, "postgres", "");
        if (localProblem == null) {
            return Optional.of(properties(LOCAL_URL, "postgres", ""));
        }
        err.printf("""

                The pglock sample needs a PostgreSQL (12 or newer) and found none.
                spring.datasource.url is not set, and %s as user postgres does not answer (%s).
                Point it at a server with SPRING_DATASOURCE_URL=jdbc:postgresql://host:5432/db (and
                SPRING_DATASOURCE_USERNAME / SPRING_DATASOURCE_PASSWORD), or start a local PostgreSQL on
                127.0.0.1:5432 that lets user postgres in.

                """, LOCAL_URL, localProblem);
        return Optional.empty();
    }

    /** Null when the server answers, otherwise why not. */
    private static String probe(String url, String user, String password) {
        Properties props = new Properties();
        props.setProperty("user", user == null ? "" : user);
        props.setProperty("password", password == null ? "" : password);
        props.setProperty("connectTimeout", "3");
        try (Connection c = DriverManager.getConnection(url, props)) {
            return null;
        } catch (SQLException e) {
            return e.getMessage();
        }
    }

    /** An argument {@code --name=value}, else a system property, else the environment variable. */
    private static String setting(String[] args, String name, String variable) {
        for (String arg : args) {
            if (arg.startsWith("--" + name + "=")) {
                return arg.substring(name.length() + 3);
            }
        }
        String property = System.getProperty(name);
        return property != null ? property : System.getenv(variable);
    }

    private static Map<String, Object> properties(String url, String user, String password) {
        Map<String, Object> properties = new LinkedHashMap<>();
        properties.put("spring.datasource.url", url);
        properties.put("spring.datasource.username", user);
        properties.put("spring.datasource.password", password);
        return properties;
    }
}
