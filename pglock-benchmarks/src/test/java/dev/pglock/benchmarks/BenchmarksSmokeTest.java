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
        Scenarios.Options quick = new Scenarios.Options(Duration.ofMillis(50), Duration.ofMillis(150), 30, 3,
                Duration.ofSeconds(1), Duration.ofMillis(300), Duration.ofSeconds(1));
        ByteArrayOutputStream printed = new ByteArrayOutputStream();

        List<Result> results = Benchmarks.run(quick, new PrintStream(printed, true, StandardCharsets.UTF_8));

        String output = printed.toString(StandardCharsets.UTF_8);
        Set<String> systems = Set.of("pglock-advisory", "pglock-lease", "shedlock", "jdbc-lock-registry",
                "naive-advisory");
        for (String scenario : List.of("uncontended", "parallel", "handoff", "held-many", "takeover")) {
            Set<String> measured = results.stream().filter(r -> r.scenario().equals(scenario))
                    .map(Result::system).collect(Collectors.toSet());
            assertThat(measured).as(scenario).containsAll(systems);
        }
        for (String scenario : List.of("uncontended", "handoff")) {
            assertThat(Benchmarks.find(results, scenario, Systems.LEASE_ASYNC_RELEASE)).as(scenario).isPresent();
        }
        assertThat(results).as(output).noneMatch(r -> r.note() != null && r.note().startsWith("failed"));
        assertThat(results).filteredOn(r -> r.system().startsWith("baseline")).hasSize(2);
        assertThat(Benchmarks.find(results, "held-many", "pglock-advisory").orElseThrow().connections())
                .isLessThanOrEqualTo(3);
        assertThat(results.get(0).json()).startsWith("{\"scenario\":\"uncontended\"").contains("\"opsPerSecond\":");
        assertThat(output).contains("### targets", "| system | ops/s |");
    }
}
