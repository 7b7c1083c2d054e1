package dev.pglock.sample;

import java.io.PrintStream;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import java.util.Properties;
import org.testcontainers.DockerClientFactory;
import org.testcontainers.postgresql.PostgreSQLContainer;

/**
 * Finds the PostgreSQL the sample runs against, in the tests' order: an explicit
 * {@code spring.datasource.url} (argument, system property or {@code SPRING_DATASOURCE_URL}, with the
 * matching username and password), a Testcontainers PostgreSQL when a Docker engine answers, then
 * 127.0.0.1:5432 as user postgres. Whatever it picks is checked before Spring starts, so a database
 * that does not answer is one paragraph, never a stack trace.
 */
final class PostgresLocator {

    static final String LOCAL_URL = "jdbc:postgresql://127.0.0.1:5432/postgres";

    private PostgresLocator() {
    }

    /** The spring.datasource.* properties to use, or empty (after printing how to fix it) when none answers. */
    static Optional<Map<String, Object>> locate(String[] args, boolean demo, PrintStream err) {
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
                    let the sample look for Docker or a local server on 127.0.0.1:5432.

                    """, explicit, user, problem);
            return Optional.empty();
        }
        String dockerProblem;
        // Spring's logging is not set up yet: keep Testcontainers' "no Docker" ERROR out of the paragraph below.
        ch.qos.logback.classic.Logger testcontainers =
                (ch.qos.logback.classic.Logger) org.slf4j.LoggerFactory.getLogger("org.testcontainers");
        ch.qos.logback.classic.Level before = testcontainers.getLevel();
        testcontainers.setLevel(ch.qos.logback.classic.Level.OFF);
        try {
            if (DockerClientFactory.instance().isDockerAvailable()) {
                testcontainers.setLevel(ch.qos.logback.classic.Level.WARN); // quiet, but not silent, while it starts
                PostgreSQLContainer container = new PostgreSQLContainer("postgres:16-alpine");
                container.start();
                Runtime.getRuntime().addShutdownHook(new Thread(container::stop));
                if (!demo) {
                    err.printf("%nStarted a PostgreSQL container for this replica. To run a second replica against"
                            + " the same database, start it with%n  SPRING_DATASOURCE_URL=%s"
                            + " SPRING_DATASOURCE_USERNAME=%s SPRING_DATASOURCE_PASSWORD=%s%n%n",
                            container.getJdbcUrl(), container.getUsername(), container.getPassword());
                }
                return Optional.of(properties(container.getJdbcUrl(), container.getUsername(), container.getPassword()));
            }
            dockerProblem = "no Docker engine answers";
        } catch (RuntimeException e) {
            dockerProblem = "Testcontainers failed (" + e.getMessage() + ")";
        } finally {
            testcontainers.setLevel(before);
        }
        String localProblem = probe(LOCAL_URL, "postgres", "");
        if (localProblem == null) {
            return Optional.of(properties(LOCAL_URL, "postgres", ""));
        }
        err.printf("""

                The pglock sample needs a PostgreSQL (12 or newer) and found none.
                It looked for, in order: spring.datasource.url (not set); a Testcontainers PostgreSQL (%s);
                %s as user postgres (%s).
                Point it at a server with SPRING_DATASOURCE_URL=jdbc:postgresql://host:5432/db (and
                SPRING_DATASOURCE_USERNAME / SPRING_DATASOURCE_PASSWORD), start Docker, or start a local
                PostgreSQL on 127.0.0.1:5432 that lets user postgres in.

                """, dockerProblem, LOCAL_URL, localProblem);
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
