package dev.pglock.faults;

import static org.assertj.core.api.Assertions.assertThat;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The short run of the fault harness, in the normal test command: the packaged jar, started as a
 * user starts it, every fault type at least once in both modes (about two minutes here). The build
 * fails on a stale write accepted, a lost update, an overlap without pause outside the limits the
 * README states, a paused holder's write accepted, a leaked lock, or a fault it could not inject.
 */
class ShortFaultRunIT {

    private static final List<String> FAULTS = List.of("pause", "kill", "terminateBackend", "partition", "restart",
            "pgbouncer", "failoverSync", "failoverAsync");

    @Test
    void everyFaultInBothModesLeavesNoStaleWriteLostUpdateUnexplainedOverlapOrLeak() throws Exception {
        Path jar = Path.of("target", "pglock-fault-tests.jar");
        Path out = Path.of("target", "faults.json");
        Files.deleteIfExists(out);
        Process run = new ProcessBuilder(Path.of(System.getProperty("java.home"), "bin", "java").toString(), "-jar",
                jar.toString(), "--seconds", "60", "--mode", "both", "--out", out.toString()).inheritIO().start();
        if (!run.waitFor(8, TimeUnit.MINUTES)) {
            run.destroyForcibly();
            throw new AssertionError("the short fault run did not finish within 8 minutes");
        }
        JsonNode report = new ObjectMapper().readTree(out.toFile());
        for (String mode : List.of("advisory", "lease")) {
            JsonNode figures = report.get(mode);
            assertThat(figures).as("%s in %s", mode, out).isNotNull();
            assertThat(figures.get("violations")).as("%s: violations", mode).isEmpty();
            assertThat(figures.get("notInjected")).as("%s: faults not injected", mode).isEmpty();
            assertThat(figures.get("staleWritesAccepted").asLong()).as("%s: staleWritesAccepted", mode).isZero();
            assertThat(figures.get("lostUpdates").asLong()).as("%s: lostUpdates", mode).isZero();
            assertThat(figures.get("overlapsOutsideKnownLimits").asLong()).as("%s: overlaps without pause outside"
                    + " the README's limits", mode).isZero();
            assertThat(figures.at("/olderHolderWritesDuringPauseOverlaps/accepted").asLong())
                    .as("%s: writes of a paused stale holder accepted", mode).isZero();
            assertThat(figures.get("leakedLocks").asLong()).as("%s: leakedLocks", mode).isZero();
            assertThat(figures.get("sections").asLong()).as("%s: sections", mode).isGreaterThan(500);
            for (String fault : FAULTS) {
                if (mode.equals("advisory") && fault.equals("pgbouncer")) {
                    assertThat(figures.at("/notApplicable/pgbouncer").asText()).contains("refuses");
                    continue;
                }
                assertThat(figures.at("/faults/" + fault).asLong()).as("%s: %s injected", mode, fault).isPositive();
            }
        }
        assertThat(run.exitValue()).as("the run's exit code").isZero();
    }
}
