package dev.pglock.sample;

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.Optional;
import org.testcontainers.DockerClientFactory;
import org.testcontainers.postgresql.PostgreSQLContainer;

/**
 * Finds the PostgreSQL the sample runs against, in the tests' order: an explicit
 * {@code spring.datasource.url} (argument, system property or {@code SPRING_DATASOURCE_URL}), a
 * Testcontainers PostgreSQL when a Docker engine answers, then 127.0.0.1:5432 as user postgres.
 */
final class PostgresLocator {

    static final String LOCAL_URL = "jdbc:postgresql://127.0.0.1:5432/postgres";

    private PostgresLocator() {
    }

    /** The spring.datasource.* properties to use, or empty (after printing how to fix it) when none answers. */
    static Optional<Map<String, Object>> locate(String[] args) {
        String explicit = explicitUrl(args);
        if (explicit != null) {
            return Optional.of(Map.of()); // Spring Boot reads it (and the user / password) itself
        }
        String dockerProblem;
        // Spring's logging is not set up yet: keep Testcontainers' "no Docker" ERROR out of the paragraph below.
        ch.qos.logback.classic.Logger testcontainers =
                (ch.qos.logback.classic.Logger) org.slf4j.LoggerFactory.getLogger("org.testcontainers");
        ch.qos.logback.classic.Level before = testcontainers.getLevel();
        testcontainers.setLevel(ch.qos.logback.classic.Level.OFF);
        try {
            if (DockerClientFactory.instance().isDockerAvailable()) {
                testcontainers.setLevel(before);
                PostgreSQLContainer container = new PostgreSQLContainer("postgres:16-alpine");
                container.start();
                Runtime.getRuntime().addShutdownHook(new Thread(container::stop));
                return Optional.of(properties(container.getJdbcUrl(), container.getUsername(), container.getPassword()));
            }
            dockerProblem = "no Docker engine answers";
        } catch (RuntimeException e) {
            dockerProblem = "Testcontainers failed (" + e.getMessage() + ")";
        } finally {
            testcontainers.setLevel(before);
        }
        try (Connection c = DriverManager.getConnection(LOCAL_URL + "?connectTimeout=3", "postgres", "")) {
            return Optional.of(properties(LOCAL_URL, "postgres", ""));
        } catch (SQLException e) {
            System.err.printf("""

                    The pglock sample needs a PostgreSQL (12 or newer) and found none.
                    It looked for, in order: spring.datasource.url (not set); a Testcontainers PostgreSQL (%s);
                    %s as user postgres (%s).
                    Point it at a server with SPRING_DATASOURCE_URL=jdbc:postgresql://host:5432/db (and
                    SPRING_DATASOURCE_USERNAME / SPRING_DATASOURCE_PASSWORD), start Docker, or start a local
                    PostgreSQL on 127.0.0.1:5432 that lets user postgres in.

                    """, dockerProblem, LOCAL_URL, e.getMessage());
            return Optional.empty();
        }
    }

    private static String explicitUrl(String[] args) {
        for (String arg : args) {
            if (arg.startsWith("--spring.datasource.url=")) {
                return arg.substring("--spring.datasource.url=".length());
            }
        }
        String property = System.getProperty("spring.datasource.url");
        return property != null ? property : System.getenv("SPRING_DATASOURCE_URL");
    }

    private static Map<String, Object> properties(String url, String user, String password) {
        Map<String, Object> properties = new LinkedHashMap<>();
        properties.put("spring.datasource.url", url);
        properties.put("spring.datasource.username", user);
        properties.put("spring.datasource.password", password);
        return properties;
    }
}
