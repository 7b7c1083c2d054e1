package dev.pglock.faults;

import dev.pglock.test.PgTestDatabase;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.Map;

/**
 * {@code java -jar pglock-fault-tests.jar --seconds 60 --mode both --out faults.json}: makes its own
 * primary and standby, runs each mode's rounds of faults, checks the history and writes the report.
 * The same jar runs the workers ({@code worker key=value...}).
 */
public final class FaultTests {

    private FaultTests() {
    }

    public static void main(String[] args) throws Exception {
        if (args.length > 0 && args[0].equals("worker")) {
            Map<String, String> options = new LinkedHashMap<>();
            for (int i = 1; i < args.length; i++) {
                int eq = args[i].indexOf('=');
                options.put(args[i].substring(0, eq), args[i].substring(eq + 1));
            }
            Worker.main(options);
            return;
        }
        Options options;
        try {
            options = Options.parse(args);
        } catch (IllegalArgumentException e) {
            System.err.println(e.getMessage());
            System.exit(2);
            return;
        }
        System.exit(run(options));
    }

    static int run(Options options) throws Exception {
        Harness.log("seed " + options.seed() + ", " + options.seconds() + " s, modes " + options.modes()
                + ", " + options.workers() + " workers, " + options.keys() + " keys");
        long started = System.nanoTime();
        Path directory = Files.createTempDirectory("pglock-faults");
        Map<String, Object> report = new LinkedHashMap<>();
        Clusters clusters;
        try {
            clusters = Clusters.create(Harness::log);
        } catch (Clusters.NotInjectable e) {
            for (String mode : options.modes()) {
                report.put(mode, Map.of("notInjected", java.util.List.of("restart, failoverSync, failoverAsync: " + e.getMessage())));
            }
            Report.write(options, report);
            Harness.log("cannot inject every fault: " + e.getMessage());
            return 3;
        }
        Harness[] running = new Harness[1];
        // Stopped from outside (Ctrl-C, a CI timeout): no worker and no cluster outlives the harness.
        Thread cleanup = new Thread(() -> {
            if (running[0] != null) {
                running[0].killAll();
            }
            clusters.close();
        }, "faults-cleanup");
        Runtime.getRuntime().addShutdownHook(cleanup);
        Harness harness = null;
        try {
            harness = new Harness(options, directory, clusters, PgTestDatabase.get());
            running[0] = harness;
            long share = Math.max(1, options.seconds() / options.modes().size());
            for (String mode : options.modes()) {
                Harness.ModeRun run = harness.run(mode, share);
                report.put(mode, new Checker(options, run, harness).check());
            }
        } finally {
            if (harness != null) {
                harness.dropResource();
            }
            clusters.close();
            Runtime.getRuntime().removeShutdownHook(cleanup);
        }
        long elapsed = (System.nanoTime() - started) / 1_000_000_000L;
        Harness.log("done in " + elapsed + " s; histories in " + directory);
        return Report.write(options, report);
    }
}
