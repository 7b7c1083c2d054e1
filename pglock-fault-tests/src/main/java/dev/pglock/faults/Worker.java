package dev.pglock.faults;

import com.zaxxer.hikari.HikariConfig;
import com.zaxxer.hikari.HikariDataSource;
import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockRequest;
import dev.pglock.core.PgLock;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.time.Duration;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;
import javax.sql.DataSource;
import org.postgresql.ds.PGSimpleDataSource;

/**
 * One worker process: a pglock client on its own pool, looping over a few keys. Each critical
 * section reads and then writes a per-key counter in the protected resource (a table on another
 * server, which no fault touches), and both steps present the lock's fencing token: the resource
 * refuses a token lower than the highest it has seen. Every step goes to the {@link EventLog}.
 *
 * <p>Started by the harness as {@code java -jar pglock-fault-tests.jar worker key=value...}; stops
 * on SIGTERM after its current section, closing the client (which releases what it holds).
 */
final class Worker {

    /** Read the counter, and raise the resource's fence to our token, unless it has seen a larger one. */
    private static final String READ = "UPDATE %s SET fence = ? WHERE lock_key = ? AND fence <= ? RETURNING counter";

    /**
     * Write the counter we computed, only while no larger token has been seen, and note the accepted
     * write (with the server's clock) in the same statement. The counter is not compared: the fence
     * is the only guard, so a guard that fails shows as a lost update.
     */
    private static final String WRITE = "WITH w AS (UPDATE %1$s SET counter = ?, fence = ? WHERE lock_key = ? AND fence <= ?"
            + " RETURNING lock_key) INSERT INTO %2$s (lock_key, worker, token, value, at_micros)"
            + " SELECT lock_key, ?, ?, ?, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint FROM w RETURNING id";

    private final Map<String, String> options;
    private final int id;
    private final List<String> keys;
    private final EventLog log;
    private volatile boolean stopping;

    private Worker(Map<String, String> options) {
        this.options = options;
        this.id = Integer.parseInt(options.get("id"));
        this.keys = List.of(options.get("keys").split(","));
        this.log = new EventLog(Path.of(options.get("events")));
    }

    static void main(Map<String, String> options) throws Exception {
        new Worker(options).run();
    }

    private void run() throws Exception {
        // A worker never outlives its harness (killed, or stopped by a CI timeout): it goes as a crash would.
        ProcessHandle.current().parent().ifPresent(parent -> parent.onExit().thenRun(() -> Runtime.getRuntime().halt(4)));
        CountDownLatch done = new CountDownLatch(1);
        Thread main = Thread.currentThread();
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            stopping = true;
            try {
                done.await(20, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                main.interrupt();
            }
        }, "worker-stop"));
        String app = "pglock-fault-w" + id;
        try (HikariDataSource resource = pool(options.get("resourceUrl"), options.get("resourceUser"),
                     options.getOrDefault("resourcePassword", ""), app + "-resource", 2);
             HikariDataSource lockPool = pool(options.get("lockUrl"), "postgres", "", app, 6)) {
            long offset = Clock.offsetMicros(resource);
            log.event("START", "-", ProcessHandle.current().pid(), "offsetMicros=" + offset);
            LockClient client = build(lockPool);
            if (client == null) {
                return;
            }
            log.event("CLIENT", "-", 0, client.owner());
            try {
                loop(client, resource);
            } finally {
                client.close(Duration.ofSeconds(3));
                log.event("CLOSED", "-", 0, "");
                reportLeftovers(client.owner());
            }
        } finally {
            log.close();
            done.countDown();
        }
    }

    private LockClient build(DataSource lockPool) {
        Duration heartbeat = Duration.ofMillis(Long.parseLong(options.get("heartbeatMillis")));
        while (!stopping) {
            try {
                if ("advisory".equals(options.get("mode"))) {
                    return PgLock.advisory(lockPool).namespace("faults").heartbeatInterval(heartbeat)
                            .fencingTokens(true).owner("w" + id).build();
                }
                var builder = PgLock.lease(lockPool).namespace("faults").heartbeatInterval(heartbeat)
                        .lease(Duration.ofMillis(Long.parseLong(options.get("leaseMillis")))).owner("w" + id);
                String listenUrl = options.get("listenUrl");
                if (listenUrl != null) {
                    PGSimpleDataSource listen = new PGSimpleDataSource();
                    listen.setURL(listenUrl);
                    listen.setUser("postgres");
                    listen.setApplicationName("pglock-fault-w" + id);
                    builder.listenDataSource(listen);
                }
                return builder.build();
            } catch (RuntimeException e) {
                log.event("ERROR", "-", 0, "build: " + e);
                sleep(200);
            }
        }
        return null;
    }

    private void loop(LockClient client, DataSource resource) {
        String table = options.get("resourceTable");
        String writes = options.get("writesTable");
        String read = String.format(READ, table);
        String write = String.format(WRITE, table, writes);
        Duration wait = Duration.ofMillis(Long.parseLong(options.get("waitMillis")));
        while (!stopping) {
            String key = keys.get(ThreadLocalRandom.current().nextInt(keys.size()));
            Optional<HeldLock> acquired;
            try {
                acquired = client.tryAcquire(LockRequest.of(key).waitAtMost(wait));
            } catch (RuntimeException e) {
                log.event("ERROR", key, 0, "acquire: " + e);
                sleep(50);
                continue;
            }
            if (acquired.isEmpty()) {
                continue;
            }
            HeldLock lock = acquired.get();
            long token = lock.fencingToken();
            log.event("ENTER", key, token, "");
            lock.onLost(lost -> log.event("LOST", key, token, lost.getMessage()));
            try {
                section(resource, read, write, key, token);
            } catch (SQLException | RuntimeException e) {
                log.event("ERROR", key, token, "section: " + e);
            }
            log.event("EXIT", key, token, "");
            try {
                // false: it was no longer held (lost, perhaps unnoticed until now)
                log.event("RELEASED", key, token, String.valueOf(lock.release()));
            } catch (RuntimeException e) {
                log.event("ERROR", key, token, "release: " + e);
            }
        }
    }

    private void section(DataSource resource, String read, String write, String key, long token) throws SQLException {
        try (Connection c = resource.getConnection()) {
            long counter;
            try (PreparedStatement ps = c.prepareStatement(read)) {
                ps.setLong(1, token);
                ps.setString(2, key);
                ps.setLong(3, token);
                try (ResultSet rs = ps.executeQuery()) {
                    if (!rs.next()) {
                        log.event("READ_REFUSED", key, token, "");
                        return;
                    }
                    counter = rs.getLong(1);
                }
            }
            log.event("READ", key, token, String.valueOf(counter));
            // The work between the read and the write: a window for a stale holder to interleave.
            sleep(ThreadLocalRandom.current().nextInt(3));
            try (PreparedStatement ps = c.prepareStatement(write)) {
                ps.setLong(1, counter + 1);
                ps.setLong(2, token);
                ps.setString(3, key);
                ps.setLong(4, token);
                ps.setInt(5, id);
                ps.setLong(6, token);
                ps.setLong(7, counter + 1);
                try (ResultSet rs = ps.executeQuery()) {
                    if (rs.next()) {
                        log.event("WRITE", key, token, String.valueOf(rs.getLong(1)));
                    } else {
                        log.event("WRITE_REFUSED", key, token, "");
                    }
                }
            }
        }
    }

    /**
     * After close: what the database still holds for this worker, read on a connection of its own
     * while the pool still keeps its idle connections open, so a lock left on a pooled connection
     * shows. Advisory: locks of backends under this worker's application name; lease: rows that
     * still list one of its acquisitions.
     */
    private void reportLeftovers(String owner) {
        String sql = "advisory".equals(options.get("mode"))
                ? "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory'"
                        + " AND a.application_name = ? AND a.pid <> pg_backend_pid()"
                : "SELECT count(*) FROM pglock_locks, unnest(holders) AS h WHERE namespace = 'faults'"
                        + " AND h LIKE ? || '#%'";
        String url = options.get("listenUrl") != null ? options.get("listenUrl") : options.get("lockUrl");
        try (Connection c = java.sql.DriverManager.getConnection(url, "postgres", "");
             PreparedStatement ps = c.prepareStatement(sql)) {
            ps.setString(1, "advisory".equals(options.get("mode")) ? "pglock-fault-w" + id : owner);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                log.event("LEFT", "-", rs.getLong(1), "advisory".equals(options.get("mode")) ? "advisory locks" : "lease rows");
            }
        } catch (SQLException e) {
            log.event("ERROR", "-", 0, "leftover check: " + e);
        }
    }

    private static HikariDataSource pool(String url, String user, String password, String applicationName, int size) {
        HikariConfig config = new HikariConfig();
        config.setJdbcUrl(url);
        config.setUsername(user);
        config.setPassword(password);
        config.setMaximumPoolSize(size);
        config.setMinimumIdle(0);
        config.setPoolName(applicationName);
        config.setConnectionTimeout(5_000);
        config.setInitializationFailTimeout(-1);
        config.addDataSourceProperty("ApplicationName", applicationName);
        config.addDataSourceProperty("connectTimeout", "2");
        config.addDataSourceProperty("loginTimeout", "5");
        return new HikariDataSource(config);
    }

    private static void sleep(long millis) {
        try {
            Thread.sleep(millis);
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }
}
