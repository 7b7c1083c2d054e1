package dev.pglock.sample;

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

    public static void main(String[] args) {
        Optional<Map<String, Object>> database = PostgresLocator.locate(args);
        if (database.isEmpty()) {
            System.exit(2);
        }
        if (Arrays.asList(args).contains("--demo")) {
            System.exit(Demo.run(database.get(), args) ? 0 : 1);
        }
        new SpringApplicationBuilder(SampleApplication.class).properties(database.get()).run(args);
    }
}
