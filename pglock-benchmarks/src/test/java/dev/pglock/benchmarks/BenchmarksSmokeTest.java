package dev.pglock.benchmarks;

import static org.assertj.core.api.Assertions.assertThat;

import java.io.ByteArrayOutputStream;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.List;
import java.util.Set;
import java.util.stream.Collectors;
import org.junit.jupiter.api.Test;

/** Every scenario for every system, very briefly, so the benchmark cannot rot. Speed is not checked here. */
class BenchmarksSmokeTest {

    @Test
    void everyScenarioRunsForEverySystem() throws Exception {
        Scenarios.Options quick = new Scenarios.Options(Duration.ofMillis(50), Duration.ofMillis(150), 300, 30, 3,
                List.of(2, 3), 5, Duration.ofMillis(300), Duration.ofSeconds(1), Duration.ofMillis(300),
                Duration.ofSeconds(1));
        ByteArrayOutputStream printed = new ByteArrayOutputStream();

        List<Result> results = Benchmarks.run(quick, new PrintStream(printed, true, StandardCharsets.UTF_8));

        String output = printed.toString(StandardCharsets.UTF_8);
        Set<String> systems = Set.of("pglock-advisory", "pglock-lease", "shedlock", "jdbc-lock-registry",
                "naive-advisory");
        for (String scenario : List.of("uncontended", "parallel", "takeover")) {
            Set<String> measured = results.stream().filter(r -> r.scenario().equals(scenario))
                    .map(Result::system).collect(Collectors.toSet());
            assertThat(measured).as(scenario).containsAll(systems);
        }
        for (String scenario : List.of("handoff-2", "handoff-3")) {
            Set<String> measured = results.stream().filter(r -> r.scenario().equals(scenario))
                    .map(Result::system).collect(Collectors.toSet());
            assertThat(measured).as(scenario).contains("pglock-advisory", "pglock-lease", "jdbc-lock-registry",
                    "naive-advisory");
            assertThat(Benchmarks.find(results, scenario, "pglock-lease").orElseThrow().clients()).isEqualTo(
                    Integer.valueOf(scenario.substring("handoff-".length())));
        }
        assertThat(Benchmarks.find(results, "uncontended", Systems.LEASE_ASYNC_RELEASE)).isPresent();
        assertThat(results).as(output).noneMatch(r -> r.note() != null && r.note().startsWith("failed"));
        // read, write, lease-sql, advisory-sql, write-parallel, per hand-off count notify, its release, its
        // delivery and advisory-sql, write-after-work once, and renew
        assertThat(results).filteredOn(r -> r.system().startsWith("baseline")).hasSize(15);
        assertThat(Benchmarks.find(results, "uncontended", "baseline-lease-sql").orElseThrow().opsPerSecond())
                .as("the lease client's own statements ran without it").isPositive();
        assertThat(Benchmarks.find(results, "uncontended", "baseline-advisory-sql").orElseThrow().opsPerSecond())
                .as("the advisory client's own statements ran without it").isPositive();
        assertThat(Benchmarks.find(results, "handoff-3", "baseline-advisory-sql").orElseThrow().p50Micros())
                .as("the advisory client's wait statements handed the key over without it").isNotNull();
        assertThat(Benchmarks.find(results, "handoff-3", "naive-advisory").orElseThrow().note())
                .as("the advisory systems took turns").contains("interleaved with 2 other system(s)");
        assertThat(Benchmarks.find(results, "handoff-2", "baseline-notify-delivery").orElseThrow().p50Micros())
                .as("NOTIFY deliveries were timed").isNotNull();
        assertThat(Benchmarks.find(results, "handoff-2", "baseline-notify-release").orElseThrow().p50Micros())
                .as("the releases alone were timed").isNotNull();
        assertThat(Benchmarks.find(results, "handoff-3", "baseline-write-after-work").orElseThrow().p50Micros())
                .as("the floor's commits after the holder's work were timed, at the last count below 8").isNotNull();
        Result lease = Benchmarks.find(results, "held-300", "pglock-lease").orElseThrow();
        assertThat(lease.p50Micros()).as("the heartbeat was timed while holding").isNotNull();
        assertThat(lease.heapBytesPerLock()).isNotNull();
        assertThat(Benchmarks.find(results, "held-300", "baseline-renew").orElseThrow().p50Micros())
                .as("the floor of renewing every lease in its row was timed").isNotNull();
        Result advisory = Benchmarks.find(results, "held-30", "pglock-advisory").orElseThrow();
        assertThat(advisory.connections()).isNotNull();
        assertThat(advisory.heapBytesPerLock()).isNotNull();
        assertThat(results.get(0).json()).startsWith("{\"scenario\":\"uncontended\"").contains("\"opsPerSecond\":",
                "\"clients\":", "\"heapBytesPerLock\":");
        assertThat(output).contains("### targets", "| system | ops/s |");
        assertThat(output).as("the floors that bound the two uncontended targets on a given machine are reported")
                .containsPattern("uncontended naive-advisory = [0-9.]+ × baseline-read \\(the bare lock")
                .containsPattern("uncontended baseline-write = [0-9.]+ × shedlock \\(the two-commit floor");
    }
}
