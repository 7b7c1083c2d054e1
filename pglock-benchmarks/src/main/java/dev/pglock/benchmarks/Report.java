package dev.pglock.benchmarks;

import java.util.ArrayList;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Locale;
import java.util.Optional;
import java.util.Set;

/** The Markdown table: each system against its floor and against pglock, and the targets. */
final class Report {

    /** Systems whose lock is a row write; the others are advisory locks (floor: two read round trips). */
    private static final Set<String> WRITERS =
            Set.of("pglock-lease", Systems.LEASE_ASYNC_RELEASE, "shedlock", "jdbc-lock-registry");

    private Report() {
    }

    static String summary(Result r) {
        if (r.opsPerSecond() == null && r.p50Micros() == null) {
            return "-- " + r.note();
        }
        StringBuilder s = new StringBuilder();
        if (r.opsPerSecond() != null) {
            s.append(String.format(Locale.ROOT, "%10.0f ops/s", r.opsPerSecond()));
        }
        if (r.p50Micros() != null) {
            s.append(String.format(Locale.ROOT, "  p50 %8.0f us  p99 %8.0f us", r.p50Micros(), r.p99Micros()));
        }
        if (r.connections() != null) {
            s.append("  connections ").append(r.connections());
        }
        return s.toString();
    }

    static String markdown(List<Result> results, Scenarios.Options options) {
        StringBuilder md = new StringBuilder();
        Set<String> scenarios = new LinkedHashSet<>();
        results.forEach(r -> scenarios.add(r.scenario()));
        for (String scenario : scenarios) {
            md.append("\n### ").append(scenario).append("\n\n");
            md.append("| system | ops/s | p50 µs | p99 µs | connections | × floor | × pglock | note |\n");
            md.append("|---|---:|---:|---:|---:|---:|---:|---|\n");
            for (Result r : results) {
                if (!r.scenario().equals(scenario)) {
                    continue;
                }
                md.append(String.format(Locale.ROOT, "| %s | %s | %s | %s | %s | %s | %s | %s |%n", r.system(),
                        number(r.opsPerSecond(), "%.0f"), number(r.p50Micros(), "%.0f"), number(r.p99Micros(), "%.0f"),
                        r.connections() == null ? "" : r.connections(), ratio(r, floor(results, r)),
                        ratio(r, pglock(results, r)), r.note() == null ? "" : r.note().replace("|", "/")));
            }
        }
        md.append("\n### targets\n\n");
        for (String line : targets(results, options)) {
            md.append("- ").append(line).append('\n');
        }
        return md.toString();
    }

    private static Optional<Result> floor(List<Result> results, Result r) {
        if (!r.scenario().equals("uncontended") || r.system().startsWith("baseline")) {
            return Optional.empty();
        }
        return Benchmarks.find(results, "uncontended", WRITERS.contains(r.system()) ? "baseline-write" : "baseline-read");
    }

    private static Optional<Result> pglock(List<Result> results, Result r) {
        if (r.system().startsWith("baseline") || r.system().startsWith("pglock")) {
            return Optional.empty();
        }
        return Benchmarks.find(results, r.scenario(), WRITERS.contains(r.system()) ? "pglock-lease" : "pglock-advisory");
    }

    /** Throughput ratio, or for delays (handoff, takeover) how many times slower the other is. */
    private static String ratio(Result r, Optional<Result> reference) {
        if (reference.isEmpty()) {
            return "";
        }
        Result ref = reference.get();
        if (r.scenario().equals("takeover") && r.p50Micros() != null && ref.p50Micros() != null) {
            return String.format(Locale.ROOT, "%.2f", r.p50Micros() / ref.p50Micros());
        }
        if (r.opsPerSecond() == null || ref.opsPerSecond() == null || ref.opsPerSecond() == 0) {
            return "";
        }
        return String.format(Locale.ROOT, "%.2f", r.opsPerSecond() / ref.opsPerSecond());
    }

    private static List<String> targets(List<Result> results, Scenarios.Options options) {
        List<String> lines = new ArrayList<>();
        throughput(lines, results, "uncontended", "pglock-advisory", "baseline-read", 0.85);
        throughput(lines, results, "uncontended", "pglock-lease", "baseline-write", 0.8);
        throughput(lines, results, "uncontended", "pglock-lease", "shedlock", 1.4);
        throughput(lines, results, "uncontended", "pglock-lease", "jdbc-lock-registry", 2.0);
        // The opt-in, reported on its own lines: the targets are judged on the defaults above.
        throughput(lines, results, "uncontended", Systems.LEASE_ASYNC_RELEASE, "shedlock", 1.4);
        throughput(lines, results, "uncontended", Systems.LEASE_ASYNC_RELEASE, "jdbc-lock-registry", 2.0);
        for (String system : List.of("pglock-advisory", "pglock-lease", Systems.LEASE_ASYNC_RELEASE)) {
            Optional<Result> ours = Benchmarks.find(results, "handoff", system);
            Optional<Result> theirs = Benchmarks.find(results, "handoff", "jdbc-lock-registry");
            if (ours.map(Result::p50Micros).isPresent() && theirs.map(Result::p50Micros).isPresent()) {
                double ratio = theirs.get().p50Micros() / ours.get().p50Micros();
                String relation = ratio >= 1 ? String.format(Locale.ROOT, "1/%.1f of", ratio)
                        : String.format(Locale.ROOT, "%.1f × slower than", 1 / ratio);
                lines.add(String.format(Locale.ROOT, "%s handoff p50 %.0f µs is %s jdbc-lock-registry's %.0f µs"
                        + " (target: 1/10 or better): %s", system, ours.get().p50Micros(), relation,
                        theirs.get().p50Micros(), ratio >= 10 ? "PASS" : "MISS"));
            }
        }
        connections(lines, results, "pglock-advisory", 3);
        connections(lines, results, "pglock-lease", 2);
        Benchmarks.find(results, "takeover", "pglock-advisory").map(Result::p50Micros).ifPresent(micros ->
                lines.add(String.format(Locale.ROOT, "pglock-advisory takeover %.0f ms (target ≤ 1000 ms): %s",
                        micros / 1000, micros <= 1_000_000 ? "PASS" : "MISS")));
        long bound = options.takeoverLease().plus(options.takeoverHeartbeat()).toMillis();
        Benchmarks.find(results, "takeover", "pglock-lease").map(Result::p50Micros).ifPresent(micros ->
                lines.add(String.format(Locale.ROOT, "pglock-lease takeover %.0f ms (target ≤ lease + heartbeat = %d ms):"
                        + " %s", micros / 1000, bound, micros / 1000 <= bound ? "PASS" : "MISS")));
        return lines;
    }

    private static void throughput(List<String> lines, List<Result> results, String scenario, String ours,
            String reference, double target) {
        Optional<Double> a = Benchmarks.find(results, scenario, ours).map(Result::opsPerSecond);
        Optional<Double> b = Benchmarks.find(results, scenario, reference).map(Result::opsPerSecond);
        if (a.isPresent() && b.isPresent()) {
            double ratio = a.get() / b.get();
            lines.add(String.format(Locale.ROOT, "%s %s = %.3f × %s (target ≥ %.2f): %s", scenario, ours, ratio,
                    reference, target, ratio >= target ? "PASS" : "MISS"));
        }
    }

    private static void connections(List<String> lines, List<Result> results, String system, int most) {
        Benchmarks.find(results, "held-many", system).map(Result::connections).ifPresent(n -> lines.add(String.format(
                Locale.ROOT, "%s holds its locks on %d connections (target ≤ %d): %s", system, n, most,
                n <= most ? "PASS" : "MISS")));
    }

    private static String number(Double value, String format) {
        return value == null ? "" : String.format(Locale.ROOT, format, value);
    }
}
