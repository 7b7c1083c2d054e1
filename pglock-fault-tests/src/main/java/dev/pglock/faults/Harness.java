package dev.pglock.faults;

import dev.pglock.test.PgBouncer;
import dev.pglock.test.PgTestDatabase;
import dev.pglock.test.TcpProxy;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.postgresql.ds.PGSimpleDataSource;

/**
 * Runs the workers and the nemesis: per mode, rounds of four topologies (direct through a TCP proxy
 * per worker; through PgBouncer; failover with synchronous, then asynchronous replication), each
 * with fresh workers, its faults at random moments, and a leak check once every worker has closed.
 */
final class Harness {

    /** The fault types, as the report names them. */
    static final List<String> FAULT_TYPES = List.of("pause", "kill", "terminateBackend", "partition", "restart",
            "pgbouncer", "failoverSync", "failoverAsync");

    private static final List<String> DIRECT_FAULTS = List.of("pause", "kill", "terminateBackend", "partition", "restart");
    private static final List<String> BOUNCER_FAULTS = List.of("pause", "kill", "terminateBackend");

    private final Options options;
    private final Path directory;
    private final Clusters clusters;
    private final PgTestDatabase resource;
    private final PGSimpleDataSource resourceDataSource;
    private final String resourceTable;
    private final String writesTable;
    private volatile long clockOffsetMicros;
    /** Every worker still running, so a harness that is stopped can stop them too. */
    private final Map<Integer, WorkerProcess> live = new java.util.concurrent.ConcurrentHashMap<>();
    private final Random random;
    private int nextWorkerId = 1;

    /** One fault as injected: type, the worker it hit (0: none), and when, on the common clock. */
    record Fault(String type, int worker, long startMicros, long endMicros, String detail) {
    }

    /** Everything one mode's run left behind, for the checker. */
    static final class ModeRun {
        final String mode;
        final List<String> keys;
        final Map<Integer, Path> workerEvents = new LinkedHashMap<>();
        final Map<Integer, String> workerPhase = new HashMap<>();
        /** The harness's clock offset when each worker's phase began (see Checker#read). */
        final Map<Integer, Long> offsets = new HashMap<>();
        /** Workers killed because they did not stop on SIGTERM, and when. */
        final Map<Integer, Long> forcedKills = new HashMap<>();
        final List<Fault> faults = new ArrayList<>();
        final List<String> leaks = new ArrayList<>();
        final List<String> problems = new ArrayList<>();
        int leakedLocks;
        int workersNotStopped;
        long startedMicros;

        ModeRun(String mode, List<String> keys) {
            this.mode = mode;
            this.keys = keys;
        }
    }

    Harness(Options options, Path directory, Clusters clusters, PgTestDatabase resource) throws SQLException {
        this.options = options;
        this.directory = directory;
        this.clusters = clusters;
        this.resource = resource;
        this.resourceDataSource = resource.simpleDataSource(resource.jdbcUrl());
        String suffix = PgTestDatabase.uniqueName("").substring(1);
        this.resourceTable = "pglock_fault_resource_" + suffix;
        this.writesTable = "pglock_fault_writes_" + suffix;
        this.clockOffsetMicros = Clock.offsetMicros(resourceDataSource);
        this.random = new Random(options.seed());
        try (Connection c = resourceDataSource.getConnection(); Statement st = c.createStatement()) {
            st.execute("CREATE TABLE " + resourceTable + " (lock_key text PRIMARY KEY, counter bigint NOT NULL,"
                    + " fence bigint NOT NULL)");
            st.execute("CREATE TABLE " + writesTable + " (id bigserial PRIMARY KEY, lock_key text NOT NULL,"
                    + " worker int NOT NULL, token bigint NOT NULL, value bigint NOT NULL, at_micros bigint NOT NULL)");
        }
    }

    String resourceTable() {
        return resourceTable;
    }

    String writesTable() {
        return writesTable;
    }

    PGSimpleDataSource resourceDataSource() {
        return resourceDataSource;
    }

    /** Drops the resource tables. */
    void dropResource() {
        try (Connection c = resourceDataSource.getConnection(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + resourceTable + ", " + writesTable);
        } catch (SQLException e) {
            log("could not drop the resource tables: " + e.getMessage());
        }
    }

    /** This process's offset to the common clock; see {@link Checker} for why workers share it. */
    long clockOffsetMicros() {
        return clockOffsetMicros;
    }

    long nowMicros() {
        return System.nanoTime() / 1000 + clockOffsetMicros;
    }

    /** Rounds of every topology until this mode's share of the time is used (at least one round). */
    ModeRun run(String mode, long seconds) throws SQLException {
        List<String> keys = new ArrayList<>();
        for (int i = 0; i < options.keys(); i++) {
            keys.add(mode + "-" + i);
        }
        try (Connection c = resourceDataSource.getConnection();
             PreparedStatement ps = c.prepareStatement("INSERT INTO " + resourceTable + " VALUES (?, 0, 0)")) {
            for (String key : keys) {
                ps.setString(1, key);
                ps.executeUpdate();
            }
        }
        ModeRun run = new ModeRun(mode, keys);
        run.startedMicros = nowMicros();
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        int round = 0;
        do {
            round++;
            log(mode + ": round " + round);
            phase(run, "direct", options.directSeconds());
            if (mode.equals("lease")) {
                // Advisory mode refuses transaction pooling (its own tests show it); the README says why.
                phase(run, "pgbouncer", options.bouncerSeconds());
            }
            phase(run, "failoverSync", 0);
            phase(run, "failoverAsync", 0);
        } while (System.nanoTime() < deadline);
        return run;
    }

    private void phase(ModeRun run, String topology, long seconds) {
        log(run.mode + ": " + topology);
        try {
            // Measured again each phase: the database clock (wall time) and the monotonic clock drift apart.
            clockOffsetMicros = Clock.offsetMicros(resourceDataSource);
        } catch (SQLException e) {
            run.problems.add(topology + ": cannot read the resource server's clock: " + e.getMessage());
            return;
        }
        Map<Integer, WorkerProcess> workers = new LinkedHashMap<>();
        Map<Integer, TcpProxy> proxies = new HashMap<>();
        PgBouncer bouncer = null;
        long lastKillMicros = 0;
        try {
            Map<String, String> base = workerOptions(run);
            if (topology.equals("pgbouncer")) {
                bouncer = PgBouncer.transactionPooling(clusters.primaryUrl(), "postgres", "", 4);
                base.put("lockUrl", bouncer.jdbcUrl());
                base.put("listenUrl", clusters.primaryUrl());
            } else if (topology.startsWith("failover")) {
                clusters.setSynchronous(topology.equals("failoverSync"));
                base.put("lockUrl", clusters.multiHostUrl());
            }
            for (int i = 0; i < options.workers(); i++) {
                startWorker(run, topology, base, workers, proxies);
            }
            awaitSections(workers, 1, 60);
            if (topology.startsWith("failover")) {
                Clusters.pause(1500 + random.nextInt(1000));
                String replication = clusters.synchronous() ? "synchronous" : "asynchronous";
                long start = nowMicros();
                clusters.failover();
                run.faults.add(new Fault(topology, 0, start, nowMicros(), "primary stopped -m immediate, standby"
                        + " promoted; " + replication + " replication"));
                awaitSections(workers, 5, 60);
                Clusters.pause(1500);
            } else {
                if (topology.equals("pgbouncer")) {
                    run.faults.add(new Fault("pgbouncer", 0, nowMicros(), nowMicros(), "transaction pooling"));
                }
                List<String> allowed = topology.equals("direct") ? DIRECT_FAULTS : BOUNCER_FAULTS;
                List<String> due = new ArrayList<>(allowed);
                Collections.shuffle(due, random);
                long end = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
                while (!due.isEmpty() || System.nanoTime() < end) {
                    Clusters.pause(300 + random.nextInt(900));
                    String type = due.isEmpty() ? allowed.get(random.nextInt(allowed.size())) : due.remove(0);
                    long kill = inject(run, type, topology, base, workers, proxies);
                    lastKillMicros = Math.max(lastKillMicros, kill);
                }
            }
        } catch (RuntimeException e) {
            run.problems.add(topology + ": " + e);
            log(run.mode + ": " + topology + " failed: " + e);
        } finally {
            stopAll(run, workers.values());
            proxies.values().forEach(TcpProxy::close);
            long killed = lastKillMicros;
            step(run, topology, "leak check", () -> checkLeaks(run, topology, killed));
            if (bouncer != null) {
                PgBouncer closing = bouncer;
                step(run, topology, "stopping PgBouncer", closing::close);
            }
            if (topology.startsWith("failover")) {
                step(run, topology, "rebuilding the standby", clusters::rebuildStandby);
            }
        }
    }

    /** SIGTERM to every worker at once, then waits for each; one that does not stop is killed and counted. */
    private void stopAll(ModeRun run, java.util.Collection<WorkerProcess> workers) {
        workers.forEach(WorkerProcess::terminate);
        for (WorkerProcess worker : workers) {
            if (!worker.awaitStop()) {
                run.workersNotStopped++;
                run.forcedKills.put(worker.id, nowMicros());
                run.problems.add("worker " + worker.id + " did not stop within 25 s of SIGTERM");
            }
            live.remove(worker.id);
        }
    }

    private static void step(ModeRun run, String topology, String what, Runnable step) {
        try {
            step.run();
        } catch (RuntimeException e) {
            run.problems.add(topology + ": " + what + " failed: " + e);
            log(run.mode + ": " + topology + ": " + what + " failed: " + e);
        }
    }

    /** Kills every worker still running (the harness itself is being stopped). */
    void killAll() {
        live.values().forEach(WorkerProcess::kill);
        live.clear();
    }

    private Map<String, String> workerOptions(ModeRun run) {
        Map<String, String> base = new LinkedHashMap<>();
        base.put("mode", run.mode);
        base.put("keys", String.join(",", run.keys));
        base.put("resourceUrl", resource.jdbcUrl());
        base.put("resourceUser", resource.user());
        if (!resource.password().isEmpty()) {
            base.put("resourcePassword", resource.password());
        }
        base.put("resourceTable", resourceTable);
        base.put("writesTable", writesTable);
        base.put("heartbeatMillis", String.valueOf(options.heartbeatMillis()));
        base.put("leaseMillis", String.valueOf(options.leaseMillis()));
        base.put("waitMillis", "2000");
        base.put("lockUrl", clusters.primaryUrl());
        return base;
    }

    private WorkerProcess startWorker(ModeRun run, String topology, Map<String, String> base,
            Map<Integer, WorkerProcess> workers, Map<Integer, TcpProxy> proxies) {
        int id = nextWorkerId++;
        Map<String, String> own = new LinkedHashMap<>(base);
        if (topology.equals("direct")) {
            TcpProxy proxy = TcpProxy.forJdbcUrl(clusters.primaryUrl());
            proxies.put(id, proxy);
            own.put("lockUrl", proxy.jdbcUrl(clusters.primaryUrl()));
        }
        WorkerProcess worker = WorkerProcess.start(id, own, directory);
        workers.put(id, worker);
        live.put(id, worker);
        run.offsets.put(id, clockOffsetMicros);
        run.workerEvents.put(id, worker.events);
        run.workerPhase.put(id, topology);
        return worker;
    }

    /** Injects one fault; returns when a kill happened (common clock), else 0. */
    private long inject(ModeRun run, String type, String topology, Map<String, String> base,
            Map<Integer, WorkerProcess> workers, Map<Integer, TcpProxy> proxies) {
        WorkerProcess victim = type.equals("pause") ? pauseInsideSection(workers) : victim(workers);
        switch (type) {
            case "pause" -> {
                long start = nowMicros();
                Clusters.pause(options.pauseMillis());
                victim.resume();
                run.faults.add(new Fault(type, victim.id, start, nowMicros(), "SIGSTOP for " + options.pauseMillis() + " ms"));
            }
            case "kill" -> {
                long start = nowMicros();
                victim.kill();
                live.remove(victim.id);
                long end = nowMicros();
                run.faults.add(new Fault(type, victim.id, start, end, "SIGKILL"));
                workers.remove(victim.id);
                TcpProxy proxy = proxies.remove(victim.id);
                if (proxy != null) {
                    proxy.close();
                }
                startWorker(run, topology, base, workers, proxies);
                return end;
            }
            case "terminateBackend" -> {
                // Retried on another holder for up to 5 s when the one chosen had no backend just then
                // (reconnecting after an earlier fault).
                long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(5);
                long start = nowMicros();
                int terminated = terminateBackends(victim.id, topology.equals("pgbouncer"));
                while (terminated == 0 && System.nanoTime() < deadline) {
                    Clusters.pause(50);
                    victim = victim(workers);
                    start = nowMicros();
                    terminated = terminateBackends(victim.id, topology.equals("pgbouncer"));
                }
                run.faults.add(new Fault(type, victim.id, start, nowMicros(), terminated + " backends"));
            }
            case "partition" -> {
                TcpProxy proxy = proxies.get(victim.id);
                long start = nowMicros();
                proxy.setPaused(true);
                Clusters.pause(options.partitionMillis());
                proxy.setPaused(false);
                run.faults.add(new Fault(type, victim.id, start, nowMicros(), "no byte through for " + options.partitionMillis() + " ms"));
            }
            case "restart" -> {
                long start = nowMicros();
                clusters.restartPrimary();
                run.faults.add(new Fault(type, 0, start, nowMicros(), "pg_ctlcluster restart -m fast"));
            }
            default -> throw new IllegalArgumentException("unknown fault " + type);
        }
        return 0;
    }

    /**
     * A worker inside a critical section now (its history's last line is an entry or a read), so the
     * fault hits a holder at work; any worker when none is found within a second.
     */
    private WorkerProcess victim(Map<Integer, WorkerProcess> workers) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(1);
        List<WorkerProcess> all = new ArrayList<>(workers.values());
        while (System.nanoTime() < deadline) {
            Collections.shuffle(all, random);
            for (WorkerProcess worker : all) {
                if (worker.insideSection()) {
                    return worker;
                }
            }
            Clusters.pause(2);
        }
        return all.get(random.nextInt(all.size()));
    }

    /** Stops a worker that is inside a critical section (tried again, for up to 3 s, while the one stopped had just left it). */
    private WorkerProcess pauseInsideSection(Map<Integer, WorkerProcess> workers) {
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(3);
        while (System.nanoTime() < deadline) {
            WorkerProcess victim = victim(workers);
            victim.pause();
            if (victim.insideSection()) {
                return victim;
            }
            victim.resume(); // stopped a moment between two sections: let it go and pick again
        }
        WorkerProcess victim = victim(workers);
        victim.pause();
        return victim;
    }

    /**
     * Ends the worker's backends. Behind PgBouncer a server connection serves every client in turn,
     * so there it ends PgBouncer's server connections too (what an operator's pg_terminate_backend of
     * a busy pool does), and the worker's direct LISTEN connection.
     */
    private int terminateBackends(int worker, boolean pooled) {
        try (Connection c = connectPrimary();
             PreparedStatement ps = c.prepareStatement("SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))"
                     + " FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
                     + " AND (application_name = ? OR (? AND application_name NOT LIKE 'pglock-fault-w%'))")) {
            ps.setString(1, "pglock-fault-w" + worker);
            ps.setBoolean(2, pooled);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return rs.getInt(1);
            }
        } catch (SQLException e) {
            return 0;
        }
    }

    /**
     * Once every worker has closed: no advisory lock may remain, and no lease row may stay held
     * past the lease of a worker that was killed (a killed worker cannot release; its lease ends).
     */
    private void checkLeaks(ModeRun run, String topology, long lastKillMicros) {
        long waitUntil = lastKillMicros == 0 ? 0 : lastKillMicros + options.leaseMillis() * 1000 + 500_000;
        while (nowMicros() < waitUntil) {
            Clusters.pause(100);
        }
        String sql = run.mode.equals("advisory")
                ? "SELECT count(*), string_agg(l.objid::text || ' pid ' || l.pid, ', ') FROM pg_locks l WHERE l.locktype = 'advisory'"
                : "SELECT count(*), string_agg(lock_key || ' ' || array_to_string(holders, ',') || ' until '"
                        + " || expires_at, '; ') FROM pglock_locks WHERE cardinality(holders) > 0"
                        + " AND expires_at > statement_timestamp()";
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(10);
        while (true) {
            try (Connection c = connectPrimary(); Statement st = c.createStatement(); ResultSet rs = st.executeQuery(sql)) {
                rs.next();
                int count = rs.getInt(1);
                // An advisory lock goes when its backend has exited, a moment after the client closed the socket.
                if (count == 0 || !run.mode.equals("advisory") || System.nanoTime() > deadline) {
                    if (count > 0) {
                        run.leakedLocks += count;
                        run.leaks.add(topology + ": " + rs.getString(2));
                    }
                    return;
                }
            } catch (SQLException e) {
                if (!e.getMessage().contains("does not exist") && System.nanoTime() > deadline) {
                    run.problems.add(topology + ": leak check failed: " + e.getMessage());
                    return;
                }
                if (e.getMessage().contains("does not exist")) {
                    return; // no lease table: no lease was ever taken on this node
                }
            }
            Clusters.pause(100);
        }
    }

    private void awaitSections(Map<Integer, WorkerProcess> workers, int atLeast, int seconds) {
        long baseline = enters(workers);
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(seconds);
        while (enters(workers) < baseline + atLeast) {
            if (System.nanoTime() > deadline) {
                throw new IllegalStateException("the workers entered no critical section within " + seconds + " s");
            }
            Clusters.pause(100);
        }
    }

    private static long enters(Map<Integer, WorkerProcess> workers) {
        long count = 0;
        for (WorkerProcess worker : List.copyOf(workers.values())) {
            if (Files.exists(worker.events)) {
                try (Stream<String> lines = Files.lines(worker.events)) {
                    count += lines.filter(line -> line.contains(" ENTER ")).count();
                } catch (IOException | UncheckedIOException e) {
                    // being written: counted next time
                }
            }
        }
        return count;
    }

    private Connection connectPrimary() throws SQLException {
        return DriverManager.getConnection(clusters.primaryUrl() + "?connectTimeout=3&socketTimeout=30", "postgres", "");
    }

    static void log(String message) {
        System.out.println("[faults " + java.time.LocalTime.now().withNano(0) + "] " + message);
    }
}
