package dev.pglock.test;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.SQLException;
import java.util.Locale;
import java.util.Properties;
import java.util.UUID;
import java.util.concurrent.atomic.AtomicInteger;
import javax.sql.DataSource;
import org.postgresql.ds.PGSimpleDataSource;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.testcontainers.DockerClientFactory;
import org.testcontainers.postgresql.PostgreSQLContainer;

/**
 * The PostgreSQL server the tests run against, found once per JVM in this order:
 *
 * <ol>
 *   <li>{@code PGLOCK_TEST_JDBC_URL} (with {@code PGLOCK_TEST_USER} and {@code PGLOCK_TEST_PASSWORD});
 *       when set it is the only candidate, so a typo fails instead of silently testing elsewhere;
 *   <li>a Testcontainers PostgreSQL when a Docker engine answers;
 *   <li>{@code jdbc:postgresql://127.0.0.1:5432/postgres} as user {@code postgres};
 *   <li>otherwise every test fails with a message naming these three options. Nothing is skipped.
 * </ol>
 *
 * <p>Tests share the server, so each isolates itself: its own lock namespace and its own table name,
 * from {@link #uniqueName(String)}.
 */
public final class PgTestDatabase {

    public static final String URL_VARIABLE = "PGLOCK_TEST_JDBC_URL";
    public static final String USER_VARIABLE = "PGLOCK_TEST_USER";
    public static final String PASSWORD_VARIABLE = "PGLOCK_TEST_PASSWORD";
    static final String LOCAL_URL = "jdbc:postgresql://127.0.0.1:5432/postgres";

    private static final Logger log = LoggerFactory.getLogger(PgTestDatabase.class);
    private static final AtomicInteger poolCounter = new AtomicInteger();
    private static volatile PgTestDatabase instance;

    private final String jdbcUrl;
    private final String user;
    private final String password;
    private final String source;

    private PgTestDatabase(String jdbcUrl, String user, String password, String source) {
        this.jdbcUrl = jdbcUrl;
        this.user = user;
        this.password = password;
        this.source = source;
    }

    /** The database for this JVM, found on first call. Throws when there is none. */
    public static PgTestDatabase get() {
        PgTestDatabase found = instance;
        if (found == null) {
            synchronized (PgTestDatabase.class) {
                found = instance;
                if (found == null) {
                    found = find();
                    log.info("pglock tests use PostgreSQL from {}: {}", found.source, found.jdbcUrl);
                    instance = found;
                }
            }
        }
        return found;
    }

    private static PgTestDatabase find() {
        String url = System.getenv(URL_VARIABLE);
        if (url != null && !url.isBlank()) {
            PgTestDatabase explicit = new PgTestDatabase(url, env(USER_VARIABLE, "postgres"),
                    env(PASSWORD_VARIABLE, ""), URL_VARIABLE);
            String problem = explicit.probe();
            if (problem != null) {
                throw new IllegalStateException(URL_VARIABLE + "=" + url + " is set but PostgreSQL there does not answer: "
                        + problem + ". Fix the URL (and " + USER_VARIABLE + "/" + PASSWORD_VARIABLE + ") or unset it.");
            }
            return explicit;
        }
        String dockerProblem;
        try {
            if (DockerClientFactory.instance().isDockerAvailable()) {
                PostgreSQLContainer container = new PostgreSQLContainer("postgres:16-alpine");
                container.start();
                return new PgTestDatabase(container.getJdbcUrl(), container.getUsername(), container.getPassword(),
                        "Testcontainers");
            }
            dockerProblem = "no Docker engine answers";
        } catch (RuntimeException e) {
            dockerProblem = "Testcontainers failed: " + e.getMessage();
        }
        PgTestDatabase local = new PgTestDatabase(LOCAL_URL, "postgres", "", "the local server");
        String localProblem = local.probe();
        if (localProblem == null) {
            return local;
        }
        throw new IllegalStateException(String.format(Locale.ROOT,
                "No PostgreSQL for the pglock tests. Tried, in order:%n"
                        + "  1. %s: not set;%n"
                        + "  2. Testcontainers: %s;%n"
                        + "  3. %s as user postgres: %s.%n"
                        + "Set %s (and %s, %s) to a server you may create tables in, start Docker, "
                        + "or start a local PostgreSQL on 127.0.0.1:5432 (user postgres).",
                URL_VARIABLE, dockerProblem, LOCAL_URL, localProblem, URL_VARIABLE, USER_VARIABLE, PASSWORD_VARIABLE));
    }

    private static String env(String name, String fallback) {
        String value = System.getenv(name);
        return value == null ? fallback : value;
    }

    /** Returns null when the server answers, otherwise why not. */
    private String probe() {
        try (Connection c = connect()) {
            c.createStatement().execute("SELECT 1");
            return null;
        } catch (SQLException e) {
            return e.getMessage();
        }
    }

    public String jdbcUrl() {
        return jdbcUrl;
    }

    public String user() {
        return user;
    }

    public String password() {
        return password;
    }

    /** Where the server came from: the variable, Testcontainers or the local server. */
    public String source() {
        return source;
    }

    /** A new plain connection (autocommit), outside any pool: the "other process" in a test. */
    public Connection connect() throws SQLException {
        return connect(jdbcUrl, "pglock-test");
    }

    /** A new plain connection whose {@code application_name} is the one given. */
    public Connection connect(String applicationName) throws SQLException {
        return connect(jdbcUrl, applicationName);
    }

    private Connection connect(String url, String applicationName) throws SQLException {
        Properties props = new Properties();
        props.setProperty("user", user);
        props.setProperty("password", password);
        props.setProperty("ApplicationName", applicationName);
        props.setProperty("connectTimeout", "5");
        return DriverManager.getConnection(url, props);
    }

    /** An unpooled DataSource: every getConnection opens a new session. */
    public DataSource simpleDataSource() {
        return simpleDataSource(jdbcUrl);
    }

    /**
     * An unpooled DataSource on another URL to this server (through a proxy or a pooler), with this
     * database's user and password.
     */
    public PGSimpleDataSource simpleDataSource(String url) {
        PGSimpleDataSource ds = new PGSimpleDataSource();
        ds.setURL(url);
        ds.setUser(user);
        ds.setPassword(password);
        ds.setApplicationName("pglock-test");
        return ds;
    }

    /** A HikariCP pool of at most {@code maxSize} connections; close it after the test. */
    public HikariDataSource pooledDataSource(int maxSize) {
        return pooledDataSource(jdbcUrl, maxSize);
    }

    /** A pool whose connections go through the proxy, so the test can cut them. */
    public HikariDataSource pooledDataSource(TcpProxy proxy, int maxSize) {
        return pooledDataSource(proxy.jdbcUrl(jdbcUrl), maxSize);
    }

    private HikariDataSource pooledDataSource(String url, int maxSize) {
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl(url);
        config.setUsername(user);
        config.setPassword(password);
        config.setMaximumPoolSize(maxSize);
        config.setMinimumIdle(0);
        config.setPoolName("pglock-test-" + poolCounter.incrementAndGet());
        config.setConnectionTimeout(30_000);
        config.addDataSourceProperty("ApplicationName", "pglock-test");
        config.addDataSourceProperty("connectTimeout", "5");
        // A connection opened just as a test cuts the network off must not hang the pool's single
        // connection-adding thread in the handshake for ever, as it would without a login timeout.
        config.addDataSourceProperty("loginTimeout", "10");
        return new HikariDataSource(config);
    }

    /** A name no other test uses, safe as a lock namespace or an unquoted identifier. */
    /**
     * How many sessions wait for the advisory lock {@code lockId} (from
     * {@code AdvisoryKeyHasher.lockId(namespace, key)}) in this database right now.
     */
    public long advisoryWaiters(long lockId) throws SQLException {
        try (Connection c = connect(); java.sql.PreparedStatement ps = c.prepareStatement(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 AND NOT granted"
                        + " AND ((classid::bigint << 32) | objid::bigint) = ?")) {
            ps.setLong(1, lockId);
            try (java.sql.ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getLong(1);
            }
        }
    }

    public static String uniqueName(String prefix) {
        return prefix + "_" + UUID.randomUUID().toString().replace("-", "").substring(0, 12);
    }
}
