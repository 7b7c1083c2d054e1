package dev.pglock.sample;

import static org.assertj.core.api.Assertions.assertThat;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockRequest;
import dev.pglock.test.PgTestDatabase;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.util.UUID;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.context.ConfigurableApplicationContext;

/**
 * The running sample, over HTTP on its management port: the health shows pglock UP with details, the
 * pglock endpoint lists a held lock with its key and fencing token, and the Prometheus scrape has
 * pglock's meters after real acquisitions.
 */
class OperationsEndpointsTest {

    private final HttpClient http = HttpClient.newHttpClient();

    private HttpResponse<String> get(int port, String path) throws Exception {
        return http.send(HttpRequest.newBuilder(URI.create("http://127.0.0.1:" + port + path)).build(),
                HttpResponse.BodyHandlers.ofString());
    }

    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void healthTheEndpointAndTheScrapeAnswerOverHttp(String mode) throws Exception {
        PgTestDatabase db = PgTestDatabase.get();
        String run = "ops-" + UUID.randomUUID();
        try (ConfigurableApplicationContext context = new SpringApplicationBuilder(SampleApplication.class)
                .profiles(mode).logStartupInfo(false)
                // As arguments: default properties lose to application.yml, which would leave the job
                // ticking (a second lock in the health details), the shared namespace and fixed ports.
                .run("--spring.datasource.url=" + db.jdbcUrl(), "--spring.datasource.username=" + db.user(),
                        "--spring.datasource.password=" + db.password(), "--sample.run-id=" + run,
                        "--sample.tick-cron=-", "--pglock.namespace=" + run, "--server.port=0",
                        "--management.server.port=0")) {
            int port = Integer.parseInt(context.getEnvironment().getProperty("local.management.port"));
            LockClient client = context.getBean(LockClient.class);
            HeldLock held = client.acquire(LockRequest.of("shown-" + mode));

            HttpResponse<String> health = get(port, "/actuator/health");
            assertThat(health.statusCode()).isEqualTo(200);
            assertThat(health.body()).contains("\"pglock\":{").contains("\"status\":\"UP\"").contains("\"held\":1");

            HttpResponse<String> locks = get(port, "/actuator/pglock");
            assertThat(locks.statusCode()).isEqualTo(200);
            assertThat(locks.body()).contains("\"key\":\"shown-" + mode + "\"").contains("\"mine\":true")
                    .contains("\"fencingToken\":" + held.fencingToken());
            assertThat(get(port, "/actuator/pglock/shown-" + mode).statusCode()).isEqualTo(200);
            assertThat(get(port, "/actuator/pglock/nobody-holds-this").statusCode()).isEqualTo(404);
            HttpResponse<String> delete = http.send(HttpRequest.newBuilder(
                    URI.create("http://127.0.0.1:" + port + "/actuator/pglock/shown-" + mode)).DELETE().build(),
                    HttpResponse.BodyHandlers.ofString());
            assertThat(delete.statusCode()).as("read-only by default: no force-release").isNotEqualTo(200);
            assertThat(held.isHeld()).isTrue();
            held.release();

            HttpResponse<String> scrape = get(port, "/actuator/prometheus");
            assertThat(scrape.statusCode()).isEqualTo(200);
            assertThat(scrape.body()).contains("pglock_acquire_seconds_count{").contains("outcome=\"acquired\"")
                    .contains("pglock_locks_held{mode=\"" + mode + "\"}").contains("pglock_held_seconds_count{")
                    .doesNotContain("shown-" + mode);
        }
    }
}
