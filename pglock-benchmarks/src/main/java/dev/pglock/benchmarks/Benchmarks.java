package dev.pglock.benchmarks;

import dev.pglock.test.PgTestDatabase;
import java.io.IOException;
import java.io.PrintStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.sql.Connection;
import java.sql.ResultSet;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.Optional;
import java.util.UUID;
import java.util.stream.Collectors;

/**
 * Measures pglock side by side with the peers a user would pick instead and with the round-trip
 * floors, in one run on one PostgreSQL, and prints each system's ratio to its floor and to pglock.
 *
 * <pre>java -jar pglock-benchmarks/target/pglock-benchmarks.jar --seconds 3 --out bench.json</pre>
 */
public final class Benchmarks {

    private Benchmarks() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("statement-pairs")) { // see StatementPairs
            StatementPairs.main(java.util.Arrays.copyOfRange(args, 1, args.length));
            return;
        }
        double seconds = 3;
        Path out = Path.of("bench.json");
        int heldLease = 100_000;
        int heldAdvisory = 5_000;
        int threads = 8;
        List<Integer> handoffClients = List.of(2, 8, 32);
        long holdMillis = 10;
        java.util.Set<String> only = new java.util.HashSet<>();
        java.util.Set<String> systemsOnly = new java.util.HashSet<>();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--seconds" -> seconds = Double.parseDouble(args[++i]);
                case "--out" -> out = Path.of(args[++i]);
                case "--held-lease" -> heldLease = Integer.parseInt(args[++i]);
                case "--held-advisory" -> heldAdvisory = Integer.parseInt(args[++i]);
                case "--handoff-clients" -> handoffClients = java.util.Arrays.stream(args[++i].split(","))
                        .map(Integer::valueOf).toList();
                case "--hold-ms" -> holdMillis = Long.parseLong(args[++i]);
                case "--lock-sessions" -> Systems.lockSessions = Integer.parseInt(args[++i]);
                case "--threads" -> threads = Integer.parseInt(args[++i]);
                case "--only" -> only.addAll(List.of(args[++i].split(",")));
                case "--systems" -> systemsOnly.addAll(List.of(args[++i].split(",")));
                default -> {
                    System.err.println("usage: java -jar pglock-benchmarks.jar [--seconds N] [--out bench.json]"
                            + " [--held-lease 100000] [--held-advisory 5000] [--threads 8] [--handoff-clients 2,8,32]"
                            + " [--hold-ms 10] [--lock-sessions 8] [--only uncontended,parallel,handoff,held,takeover]"
                            + " [--systems pglock-lease,baseline-write,...];"
                            + " unknown argument '" + args[i] + "'");
                    System.exit(2);
                }
            }
        }
        Duration measure = Duration.ofMillis(Math.round(seconds * 1000));
        Scenarios.Options options = new Scenarios.Options(measure.dividedBy(6), measure, heldLease, heldAdvisory,
                threads, handoffClients, holdMillis, Duration.ofSeconds(2), Duration.ofSeconds(2), Duration.ofMillis(500),
                null);
        List<Result> results = run(options, only, systemsOnly, System.out);
        Files.writeString(out, results.stream().map(Result::json).collect(Collectors.joining(",\n  ", "[\n  ", "\n]\n")));
        System.out.println("\nwrote " + out.toAbsolutePath());
    }

    /** Runs every scenario for every system where it applies and prints the tables. */
    static List<Result> run(Scenarios.Options options, PrintStream out) throws Exception {
        return run(options, java.util.Set.of(), java.util.Set.of(), out);
    }

    /** Runs the scenarios named in {@code only} for the systems named in {@code systemsOnly} (all when empty). */
    static List<Result> run(Scenarios.Options options, java.util.Set<String> only, java.util.Set<String> systemsOnly,
            PrintStream out) throws Exception {
        PgTestDatabase db = PgTestDatabase.get();
        String run = "b" + UUID.randomUUID().toString().replace("-", "").substring(0, 8);
        Systems systems = new Systems(db, run);
        selected = only;
        selectedSystems = systemsOnly;
        Scenarios scenarios = new Scenarios(db, systems, options);
        out.printf("pglock benchmarks on %s (%s), %s per measurement after %s warm-up, run %s%n", serverVersion(db),
                db.jdbcUrl(), options.measure(), options.warmup(), run);
        Duration lockAtMostFor = Duration.ofSeconds(30);
        Duration registryTtl = options.registryTimeToLive();
        List<Result> results = new ArrayList<>();
        try {
            if (!only.isEmpty() && !only.contains("uncontended")) {
                // skipped on request
            } else try {
                List<Scenarios.Subject> subjects = new ArrayList<>();
                addSubject(subjects, "baseline-read", scenarios::baselineReadSubject);
                addSubject(subjects, "pglock-advisory", () -> Scenarios.subject(systems.pglockAdvisory("u-adv")));
                addSubject(subjects, "naive-advisory", () -> Scenarios.subject(systems.naiveAdvisory("u-naive", 10)));
                addSubject(subjects, "baseline-advisory-sql", () -> scenarios.baselineAdvisorySqlSubject(run));
                addSubject(subjects, "baseline-write", () -> scenarios.baselineWriteSubject(run));
                addSubject(subjects, "baseline-lease-sql", () -> scenarios.baselineLeaseSqlSubject(run));
                addSubject(subjects, "pglock-lease", () -> Scenarios.subject(
                        systems.pglockLease("u-lease", Duration.ofSeconds(30), Duration.ofSeconds(5))));
                addSubject(subjects, Systems.LEASE_ASYNC_RELEASE, () -> Scenarios.subject(
                        systems.pglockLeaseAsyncRelease("u-lease-async", Duration.ofSeconds(30), Duration.ofSeconds(5))));
                addSubject(subjects, "shedlock", () -> Scenarios.subject(systems.shedlock("u-shed", lockAtMostFor)));
                addSubject(subjects, "jdbc-lock-registry",
                        () -> Scenarios.subject(systems.jdbcLockRegistry("u-reg", registryTtl)));
                List<Result> uncontended = scenarios.uncontendedRounds(subjects);
                for (Result result : uncontended) {
                    results.add(result);
                    out.printf(Locale.ROOT, "  %-12s %-20s %s%n", "uncontended", result.system(), Report.summary(result));
                }
            } catch (Exception e) {
                results.add(Result.skipped("uncontended", "all", "failed: " + e));
                out.println("  uncontended failed: " + e);
            }

            if (only.isEmpty() || only.contains("parallel")) {
                try {
                    List<Scenarios.Parallel> subjects = new ArrayList<>();
                    addParallel(subjects, "baseline-write-parallel", () -> scenarios.baselineWriteParallel(run),
                            systems.applicationName("baseline-write-parallel"));
                    addParallel(subjects, "pglock-advisory", () -> systems.pglockAdvisory("p-adv"),
                            systems.applicationName("p-adv"));
                    addParallel(subjects, "pglock-lease", () -> systems.pglockLease("p-lease", Duration.ofSeconds(30),
                            Duration.ofSeconds(5)), systems.applicationName("p-lease"));
                    addParallel(subjects, "shedlock", () -> systems.shedlock("p-shed", lockAtMostFor),
                            systems.applicationName("p-shed"));
                    addParallel(subjects, "jdbc-lock-registry", () -> systems.jdbcLockRegistry("p-reg", registryTtl),
                            systems.applicationName("p-reg"));
                    addParallel(subjects, "naive-advisory", () -> systems.naiveAdvisory("p-naive", 10),
                            systems.applicationName("p-naive"));
                    for (Result result : scenarios.parallel(subjects)) {
                        results.add(result);
                        out.printf(Locale.ROOT, "  %-12s %-20s %s%n", "parallel", result.system(), Report.summary(result));
                    }
                } catch (Exception e) {
                    results.add(Result.skipped("parallel", "all", "failed: " + e));
                    out.println("  parallel failed: " + e);
                }
            }

            // The floor's commits after the holder's work, once (it does not depend on the clients waiting): at
            // the first count the lease target is judged at (8 or more), else at the last.
            List<Integer> counts = options.handoffClients();
            int afterWorkAt = counts.stream().filter(c -> c >= 8).findFirst().orElse(counts.isEmpty() ? -1
                    : counts.get(counts.size() - 1));
            for (int clients : options.handoffClients()) {
                String h = "h" + clients + "-";
                // The advisory systems take turns (their ratios are the tight ones); the others run one after another.
                handoffRounds(out, results, scenarios, clients, List.of(
                        new Scenarios.Contender("pglock-advisory", i -> systems.pglockAdvisory(h + "adv-" + i)),
                        new Scenarios.Contender("naive-advisory", i -> systems.naiveAdvisory(h + "naive-" + i, 2)),
                        new Scenarios.Contender("baseline-advisory-sql", recordedAdvisoryWait(systems, h))));
                step(out, results, "handoff-" + clients, "pglock-lease", () -> scenarios.handoff("pglock-lease", clients,
                        i -> systems.pglockLease(h + "lease-" + i, Duration.ofSeconds(30), Duration.ofSeconds(5))));
                step(out, results, "handoff-" + clients, "jdbc-lock-registry", () -> scenarios.handoff("jdbc-lock-registry",
                        clients, i -> systems.jdbcLockRegistry(h + "reg-" + i, registryTtl)));
                step(out, results, "handoff-" + clients, "baseline-notify", () -> scenarios.handoff("baseline-notify",
                        clients, i -> systems.baselineNotify(h + "notify-" + i)));
                // Its release statements and NOTIFY deliveries alone, only from a hand-off that ran to its end.
                boolean notified = find(results, "handoff-" + clients, "baseline-notify")
                        .filter(r -> r.opsPerSecond() != null).isPresent();
                step(out, results, "handoff-" + clients, "baseline-notify", () -> notified
                        ? systems.notifyDelivery.releaseResult("handoff-" + clients, clients)
                        : Result.skipped("handoff-" + clients, "baseline-notify-release", "baseline-notify did not run"));
                step(out, results, "handoff-" + clients, "baseline-notify", () -> notified
                        ? systems.notifyDelivery.result("handoff-" + clients, clients)
                        : Result.skipped("handoff-" + clients, "baseline-notify-delivery", "baseline-notify did not run"));
                if (clients == afterWorkAt) {
                    step(out, results, "handoff-" + clients, "baseline-write-after-work",
                            () -> scenarios.writeAfterWork("handoff-" + clients, run));
                }
            }

            Duration heartbeat = options.heldHeartbeat();
            step(out, results, "held-" + options.heldLease(), "pglock-lease", () -> scenarios.held(systems.pglockLease("m-lease",
                    heartbeat.multipliedBy(5), heartbeat, heartbeatTimer()), systems.applicationName("m-lease"),
                    options.heldLease(), heartbeatTimer.get()));
            step(out, results, "held-" + options.heldLease(), "baseline-renew", () -> scenarios.baselineRenew(run,
                    options.heldLease(), 3));
            step(out, results, "held-" + options.heldAdvisory(), "pglock-advisory", () -> scenarios.held(systems.pglockAdvisory("m-adv",
                    heartbeat, sessionCheckTimer()), systems.applicationName("m-adv"), options.heldAdvisory(),
                    sessionCheckTimer.get()));
            step(out, results, "held-" + options.heldAdvisory(), "naive-advisory", () -> scenarios.held(systems.naiveAdvisory("m-naive", 10, Duration.ofSeconds(1)),
                    systems.applicationName("m-naive"), options.heldAdvisory(), new StatementTimer("nothing", sql -> false)));

            step(out, results, "takeover", "pglock-advisory", () -> scenarios.takeoverByTermination(
                    systems.pglockAdvisory("t-adv-holder"), systems.applicationName("t-adv-holder"),
                    systems.pglockAdvisory("t-adv-taker")));
            step(out, results, "takeover", "pglock-lease", () -> scenarios.takeoverLease());
            step(out, results, "takeover", "shedlock", () -> scenarios.takeoverByExpiry(
                    systems.shedlock("t-shed-holder", options.takeoverLease()),
                    systems.shedlock("t-shed-taker", options.takeoverLease()),
                    "holder never unlocked; lockAtMostFor " + options.takeoverLease().toMillis() + " ms, polled every 10 ms"));
            // The registry's time-to-live at the others' lease (its default is 10 s): the same bound for all.
            Duration takeoverTtl = registryTtl == null ? options.takeoverLease() : registryTtl;
            step(out, results, "takeover", "jdbc-lock-registry", () -> scenarios.takeoverByExpiry(
                    systems.jdbcLockRegistry("t-reg-holder", takeoverTtl), systems.jdbcLockRegistry("t-reg-taker", takeoverTtl),
                    "holder never unlocked; time-to-live " + takeoverTtl.toMillis() + " ms"));
            step(out, results, "takeover", "naive-advisory", () -> scenarios.takeoverByTermination(
                    systems.naiveAdvisory("t-naive-holder", 2), systems.applicationName("t-naive-holder"),
                    systems.naiveAdvisory("t-naive-taker", 2)));
        } finally {
            dropTables(db, run);
        }
        out.println();
        out.println(Report.markdown(results, options));
        return results;
    }

    private static final ThreadLocal<StatementTimer> heartbeatTimer = new ThreadLocal<>();
    private static final ThreadLocal<StatementTimer> sessionCheckTimer = new ThreadLocal<>();

    /** Times the lease client's heartbeat statement (the one that renews every lock it holds). */
    private static StatementTimer heartbeatTimer() {
        heartbeatTimer.set(new StatementTimer("heartbeat statement", sql -> sql.contains("AS h(lock_key, holder,")));
        return heartbeatTimer.get();
    }

    /** Times the advisory client's watchdog check of its lock sessions. */
    private static StatementTimer sessionCheckTimer() {
        sessionCheckTimer.set(new StatementTimer("session check", sql -> sql.startsWith("SELECT s.mine, s.pid")));
        return sessionCheckTimer.get();
    }

    interface Step {
        Result run() throws Exception;
    }

    interface SubjectFactory {
        Scenarios.Subject create() throws Exception;
    }

    private static java.util.Set<String> selected = java.util.Set.of();
    private static java.util.Set<String> selectedSystems = java.util.Set.of();

    private static boolean wanted(String system) {
        return selectedSystems.isEmpty() || selectedSystems.contains(system);
    }

    interface SystemFactory {
        LockSystem create() throws Exception;
    }

    private static void addParallel(List<Scenarios.Parallel> subjects, String system, SystemFactory factory,
            String applicationName) throws Exception {
        if (wanted(system)) {
            subjects.add(new Scenarios.Parallel(factory.create(), applicationName));
        }
    }

    private static void addSubject(List<Scenarios.Subject> subjects, String system, SubjectFactory factory)
            throws Exception {
        if (wanted(system)) {
            subjects.add(factory.create());
        }
    }

    /** The replay's clients, recording a real client's wait first (once, when the first replaying client is made). */
    private static Scenarios.Factory recordedAdvisoryWait(Systems systems, String prefix) {
        java.util.concurrent.atomic.AtomicReference<List<SqlRecorder.Recorded>> recorded =
                new java.util.concurrent.atomic.AtomicReference<>();
        return i -> {
            if (recorded.get() == null) {
                recorded.set(systems.recordAdvisoryWait());
            }
            return systems.advisorySql(prefix + "sql-" + i, recorded.get());
        };
    }

    /** The wanted contenders of a hand-off, taking turns (Scenarios.handoffRounds); like step() for each. */
    private static void handoffRounds(PrintStream out, List<Result> results, Scenarios scenarios, int clients,
            List<Scenarios.Contender> all) {
        String scenario = "handoff-" + clients;
        List<Scenarios.Contender> contenders = all.stream().filter(c -> wanted(c.name())).toList();
        if (!selected.isEmpty() && selected.stream().noneMatch(scenario::startsWith) || contenders.isEmpty()) {
            return;
        }
        if (clients * contenders.size() > MOST_CLIENTS_AT_ONCE) {
            // Too many connections at once for a default server: one system after another, as the others.
            for (Scenarios.Contender contender : contenders) {
                step(out, results, scenario, contender.name(), () -> scenarios.handoff(contender.name(), clients,
                        contender.factory()));
            }
            return;
        }
        List<Result> measured;
        try {
            measured = scenarios.handoffRounds(clients, contenders);
        } catch (Exception e) {
            measured = contenders.stream().map(c -> Result.skipped(scenario, c.name(), "failed: " + e)).toList();
        }
        for (Result result : measured) {
            results.add(result);
            out.printf(Locale.ROOT, "  %-12s %-20s %s%n", scenario, result.system(), Report.summary(result));
        }
    }

    /**
     * The most clients that take turns in one hand-off: every client keeps a connection or two open
     * through the other systems' turns, and three systems of 32 clients (96 clients, with their pools)
     * ran out of a default server's 100 connections. Above it the systems run one after another.
     */
    private static final int MOST_CLIENTS_AT_ONCE = 30;

    private static void step(PrintStream out, List<Result> results, String scenario, String system, Step step) {
        if (!selected.isEmpty() && selected.stream().noneMatch(scenario::startsWith) || !wanted(system)) {
            return;
        }
        Result result;
        try {
            result = step.run();
        } catch (Exception e) {
            result = Result.skipped(scenario, system, "failed: " + e);
        }
        results.add(result);
        out.printf(Locale.ROOT, "  %-12s %-20s %s%n", scenario, result.system(), Report.summary(result));
    }

    private static String serverVersion(PgTestDatabase db) {
        try (Connection c = db.connect(); Statement st = c.createStatement();
                ResultSet rs = st.executeQuery("SHOW server_version")) {
            rs.next();
            return "PostgreSQL " + rs.getString(1);
        } catch (Exception e) {
            return "PostgreSQL (version unknown)";
        }
    }

    private static void dropTables(PgTestDatabase db, String run) {
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS bench_pglock_" + run + ", bench_shedlock_" + run + ", bench_parallel_" + run
                    + ", bench_" + run + "_lock, bench_leasesql_" + run + ", bench_plain_" + run + ", bench_notify_" + run
                    + ", bench_renew_" + run + "; DROP SEQUENCE IF EXISTS bench_pglock_" + run + "_fencing_seq, bench_leasesql_"
                    + run + "_fencing_seq, bench_renew_" + run + "_fencing_seq");
        } catch (Exception e) {
            System.err.println("could not drop the benchmark's tables: " + e.getMessage());
        }
    }

    static Optional<Result> find(List<Result> results, String scenario, String system) {
        return results.stream().filter(r -> r.scenario().equals(scenario) && r.system().equals(system)).findFirst();
    }
}
