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
        double seconds = 3;
        Path out = Path.of("bench.json");
        int held = 1000;
        int threads = 8;
        java.util.Set<String> only = new java.util.HashSet<>();
        java.util.Set<String> systemsOnly = new java.util.HashSet<>();
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--seconds" -> seconds = Double.parseDouble(args[++i]);
                case "--out" -> out = Path.of(args[++i]);
                case "--held" -> held = Integer.parseInt(args[++i]);
                case "--threads" -> threads = Integer.parseInt(args[++i]);
                case "--only" -> only.addAll(List.of(args[++i].split(",")));
                case "--systems" -> systemsOnly.addAll(List.of(args[++i].split(",")));
                default -> {
                    System.err.println("usage: java -jar pglock-benchmarks.jar [--seconds N] [--out bench.json]"
                            + " [--held 1000] [--threads 8] [--only uncontended,parallel,handoff,held-many,takeover]"
                            + " [--systems pglock-lease,baseline-write,...];"
                            + " unknown argument '" + args[i] + "'");
                    System.exit(2);
                }
            }
        }
        Duration measure = Duration.ofMillis(Math.round(seconds * 1000));
        Scenarios.Options options = new Scenarios.Options(measure.dividedBy(3), measure, held, threads,
                Duration.ofSeconds(2), Duration.ofMillis(500), null);
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
                addSubject(subjects, "baseline-write", () -> scenarios.baselineWriteSubject(run));
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

            step(out, results, "parallel", "pglock-advisory", () -> scenarios.parallel(systems.pglockAdvisory("p-adv")));
            step(out, results, "parallel", "pglock-lease", () -> scenarios.parallel(
                    systems.pglockLease("p-lease", Duration.ofSeconds(30), Duration.ofSeconds(5))));
            step(out, results, "parallel", "shedlock", () -> scenarios.parallel(systems.shedlock("p-shed", lockAtMostFor)));
            step(out, results, "parallel", "jdbc-lock-registry",
                    () -> scenarios.parallel(systems.jdbcLockRegistry("p-reg", registryTtl)));
            step(out, results, "parallel", "naive-advisory", () -> scenarios.parallel(systems.naiveAdvisory("p-naive", 10)));

            step(out, results, "handoff", "pglock-advisory",
                    () -> scenarios.handoff("pglock-advisory", i -> systems.pglockAdvisory("h-adv-" + i)));
            step(out, results, "handoff", "pglock-lease", () -> scenarios.handoff("pglock-lease",
                    i -> systems.pglockLease("h-lease-" + i, Duration.ofSeconds(30), Duration.ofSeconds(5))));
            step(out, results, "handoff", Systems.LEASE_ASYNC_RELEASE, () -> scenarios.handoff(Systems.LEASE_ASYNC_RELEASE,
                    i -> systems.pglockLeaseAsyncRelease("h-lease-async-" + i, Duration.ofSeconds(30), Duration.ofSeconds(5))));
            step(out, results, "handoff", "shedlock",
                    () -> scenarios.handoff("shedlock", i -> systems.shedlock("h-shed-" + i, lockAtMostFor)));
            step(out, results, "handoff", "jdbc-lock-registry",
                    () -> scenarios.handoff("jdbc-lock-registry", i -> systems.jdbcLockRegistry("h-reg-" + i, registryTtl)));
            step(out, results, "handoff", "naive-advisory",
                    () -> scenarios.handoff("naive-advisory", i -> systems.naiveAdvisory("h-naive-" + i, 2)));

            step(out, results, "held-many", "pglock-advisory", () -> scenarios.heldMany(systems.pglockAdvisory("m-adv"),
                    systems.applicationName("m-adv")));
            step(out, results, "held-many", "pglock-lease", () -> scenarios.heldMany(systems.pglockLease("m-lease",
                    Duration.ofSeconds(30), Duration.ofSeconds(5)), systems.applicationName("m-lease")));
            step(out, results, "held-many", "shedlock", () -> scenarios.heldMany(systems.shedlock("m-shed", lockAtMostFor),
                    systems.applicationName("m-shed")));
            step(out, results, "held-many", "jdbc-lock-registry", () -> scenarios.heldMany(
                    systems.jdbcLockRegistry("m-reg", registryTtl), systems.applicationName("m-reg")));
            step(out, results, "held-many", "naive-advisory", () -> scenarios.heldMany(systems.naiveAdvisory("m-naive", 20),
                    systems.applicationName("m-naive")));

            step(out, results, "takeover", "pglock-advisory", () -> scenarios.takeoverByTermination(
                    systems.pglockAdvisory("t-adv-holder"), systems.applicationName("t-adv-holder"),
                    systems.pglockAdvisory("t-adv-taker")));
            step(out, results, "takeover", "pglock-lease", () -> scenarios.takeoverLease());
            step(out, results, "takeover", "shedlock", () -> scenarios.takeoverByExpiry(
                    systems.shedlock("t-shed-holder", options.takeoverLease()),
                    systems.shedlock("t-shed-taker", options.takeoverLease()),
                    "holder never unlocked; lockAtMostFor " + options.takeoverLease().toMillis() + " ms, polled every 10 ms"));
            step(out, results, "takeover", "jdbc-lock-registry", () -> scenarios.takeoverByExpiry(
                    systems.jdbcLockRegistry("t-reg-holder", registryTtl), systems.jdbcLockRegistry("t-reg-taker", registryTtl),
                    "holder never unlocked; time-to-live " + (registryTtl == null ? "10000 ms (default)"
                            : registryTtl.toMillis() + " ms")));
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

    private static void addSubject(List<Scenarios.Subject> subjects, String system, SubjectFactory factory)
            throws Exception {
        if (wanted(system)) {
            subjects.add(factory.create());
        }
    }

    private static void step(PrintStream out, List<Result> results, String scenario, String system, Step step) {
        if (!selected.isEmpty() && !selected.contains(scenario) || !wanted(system)) {
            return;
        }
        Result result;
        try {
            result = step.run();
        } catch (Exception e) {
            result = Result.skipped(scenario, system, "failed: " + e);
        }
        results.add(result);
        out.printf(Locale.ROOT, "  %-12s %-20s %s%n", scenario, system, Report.summary(result));
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
            st.execute("DROP TABLE IF EXISTS bench_pglock_" + run + ", bench_shedlock_" + run + ", bench_" + run
                    + "_lock; DROP SEQUENCE IF EXISTS bench_pglock_" + run + "_fencing_seq");
        } catch (Exception e) {
            System.err.println("could not drop the benchmark's tables: " + e.getMessage());
        }
    }

    static Optional<Result> find(List<Result> results, String scenario, String system) {
        return results.stream().filter(r -> r.scenario().equals(scenario) && r.system().equals(system)).findFirst();
    }
}
