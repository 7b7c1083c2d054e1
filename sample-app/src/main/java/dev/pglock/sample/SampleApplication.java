package dev.pglock.sample;

import java.io.PrintStream;
import java.util.Arrays;
import java.util.Map;
import java.util.Optional;
import org.springframework.boot.autoconfigure.SpringBootApplication;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.scheduling.annotation.EnableScheduling;

/**
 * The pglock sample: a service that pays invoices, runs a scheduled job and serves a report, as one
 * replica of several. {@code --demo} races several replicas in both lock modes and prints the result;
 * without it this process is one long-running replica.
 */
@SpringBootApplication
@EnableScheduling
public class SampleApplication {

    /** Exit codes of {@code --demo}. */
    static final int HELD = 0;
    static final int VIOLATED = 1;
    static final int NO_DATABASE = 2;
    static final int INCOMPLETE = 3;

    public static void main(String[] args) {
        int code = run(args, System.out, System.err);
        if (code >= 0) {
            System.exit(code);
        }
    }

    /** Runs the demo (returns its exit code) or starts a long-running replica (returns -1). */
    static int run(String[] args, PrintStream out, PrintStream err) {
        boolean demo = Arrays.asList(args).contains("--demo");
        Optional<Map<String, Object>> database = DatabaseCheck.check(args, err);
        if (database.isEmpty()) {
            return NO_DATABASE;
        }
        if (Arrays.stream(args).anyMatch(a -> a.startsWith("--demo.replica="))) {
            return DemoReplica.run(database.get(), args, out); // one of the demo's replica processes
        }
        if (demo) {
            try {
                return Demo.run(database.get(), args, out);
            } catch (RuntimeException e) {
                err.printf("%nThe demo could not finish: %s%n", e.getMessage());
                return INCOMPLETE;
            }
        }
        new SpringApplicationBuilder(SampleApplication.class).properties(database.get()).run(args);
        return -1;
    }
}
