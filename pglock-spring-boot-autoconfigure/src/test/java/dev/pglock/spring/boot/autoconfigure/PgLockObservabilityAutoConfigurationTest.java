package dev.pglock.spring.boot.autoconfigure;

import static org.assertj.core.api.Assertions.assertThat;
import static org.awaitility.Awaitility.await;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockLostException;
import dev.pglock.core.LockRequest;
import dev.pglock.core.PgLock;
import dev.pglock.spring.DistributedLock;
import dev.pglock.spring.LockTemplate;
import dev.pglock.test.PgTestDatabase;
import io.micrometer.core.instrument.MeterRegistry;
import io.micrometer.core.instrument.observation.DefaultMeterObservationHandler;
import io.micrometer.core.instrument.simple.SimpleMeterRegistry;
import io.micrometer.observation.ObservationRegistry;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.util.Map;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.springframework.boot.actuate.endpoint.annotation.Endpoint;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.health.contributor.Health;
import org.springframework.boot.health.contributor.HealthIndicator;
import org.springframework.boot.health.contributor.Status;
import org.springframework.boot.jdbc.autoconfigure.DataSourceAutoConfiguration;
import org.springframework.boot.test.context.FilteredClassLoader;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;

/**
 * Every conditional of the operations side (present, absent from the classpath, backed off by a user
 * bean, switched off by a property), and the real meters after real acquisitions, a skip and a
 * forced loss, on a real database.
 */
class PgLockObservabilityAutoConfigurationTest {

    private static final PgTestDatabase db = PgTestDatabase.get();

    private final String namespace = PgTestDatabase.uniqueName("observed");
    private final String table = PgTestDatabase.uniqueName("pglock_observed");

    private final ApplicationContextRunner runner = new ApplicationContextRunner()
            .withConfiguration(AutoConfigurations.of(DataSourceAutoConfiguration.class, PgLockAutoConfiguration.class,
                    PgLockObservabilityAutoConfiguration.class))
            .withPropertyValues("spring.datasource.url=" + db.jdbcUrl(), "spring.datasource.username=" + db.user(),
                    "spring.datasource.password=" + db.password(), "pglock.namespace=" + namespace,
                    "pglock.table.name=" + table)
            .withUserConfiguration(Registries.class);

    @AfterEach
    void dropTable() throws Exception {
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + table + "; DROP SEQUENCE IF EXISTS " + table + "_fencing_seq");
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class Registries {
        @Bean
        SimpleMeterRegistry meterRegistry() {
            return new SimpleMeterRegistry();
        }

        @Bean
        ObservationRegistry observationRegistry(MeterRegistry meters) {
            ObservationRegistry registry = ObservationRegistry.create();
            registry.observationConfig().observationHandler(new DefaultMeterObservationHandler(meters));
            return registry;
        }
    }

    /** A scheduled-style job that skips when its lock is held elsewhere. */
    static class Job {
        @DistributedLock(key = "'observed-job'", whenLocked = DistributedLock.WhenLocked.SKIP)
        public String run() {
            return "ran";
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class JobConfig {
        @Bean
        Job job() {
            return new Job();
        }
    }

    @Test
    void withMicrometerTheStarterRecordsAcquisitionsHeldSectionsSkipsHeartbeatsAndLosses() {
        runner.withUserConfiguration(JobConfig.class)
                .withPropertyValues("pglock.mode=lease", "pglock.lease=3s", "pglock.heartbeat-interval=200ms")
                .run(context -> {
                    assertThat(context).hasSingleBean(PgLockMetrics.class);
                    MeterRegistry meters = context.getBean(MeterRegistry.class);
                    LockTemplate template = context.getBean(LockTemplate.class);
                    LockClient client = context.getBean(LockClient.class);
                    Job job = context.getBean(Job.class);

                    assertThat(template.tryRun("observed-1", () -> { })).isTrue();
                    assertThat(job.run()).isEqualTo("ran");
                    try (LockClient other = PgLock.lease(db.pooledDataSource(4)).tableName(table).namespace(namespace)
                            .build()) {
                        HeldLock elsewhere = other.acquire(LockRequest.of("observed-job"));
                        assertThat(job.run()).as("skipped while held elsewhere").isNull();
                        assertThat(template.tryRun("observed-job", () -> { })).isFalse();
                        elsewhere.release();

                        AtomicReference<LockLostException> heard = new AtomicReference<>();
                        HeldLock doomed = client.acquire(LockRequest.of("observed-doomed"));
                        doomed.onLost(heard::set);
                        assertThat(meters.get("pglock.locks.held").tag("mode", "lease").gauge().value()).isEqualTo(1);
                        other.forceRelease("observed-doomed");
                        await().atMost(Duration.ofSeconds(10)).until(() -> heard.get() != null);
                    }

                    assertThat(meters.get("pglock.acquire").tags("mode", "lease", "outcome", "acquired", "wait", "no")
                            .timer().count()).isEqualTo(3);
                    assertThat(meters.get("pglock.acquire").tags("mode", "lease", "outcome", "not-acquired")
                            .timer().count()).isEqualTo(2);
                    assertThat(meters.get("pglock.held").tags("mode", "lease", "outcome", "released").timer().count())
                            .isEqualTo(2);
                    await().atMost(Duration.ofSeconds(5)).until(() -> meters.find("pglock.held")
                            .tags("outcome", "lost").timer() != null);
                    assertThat(meters.get("pglock.lost").tags("mode", "lease", "reason", "taken-over").counter().count())
                            .isEqualTo(1);
                    assertThat(meters.get("pglock.skipped").tag("method", "Job.run").counter().count()).isEqualTo(1);
                    assertThat(meters.get("pglock.heartbeat").tags("mode", "lease", "outcome", "success").timer().count())
                            .isPositive();
                    assertThat(meters.get("pglock.sessions").tag("mode", "lease").gauge().value()).isPositive();
                    assertThat(meters.get("pglock.locks.held").tag("mode", "lease").gauge().value()).isZero();
                    // No key ever becomes a tag.
                    assertThat(meters.getMeters()).allSatisfy(meter -> assertThat(meter.getId().getTags())
                            .noneMatch(tag -> tag.getValue().startsWith("observed-")));
                });
    }

    @Test
    void withoutMicrometerThereAreNoMetersAndLockingStillWorks() {
        new ApplicationContextRunner()
                .withConfiguration(AutoConfigurations.of(DataSourceAutoConfiguration.class, PgLockAutoConfiguration.class,
                        PgLockObservabilityAutoConfiguration.class))
                .withPropertyValues("spring.datasource.url=" + db.jdbcUrl(), "spring.datasource.username=" + db.user(),
                        "spring.datasource.password=" + db.password(), "pglock.namespace=" + namespace)
                .withClassLoader(new FilteredClassLoader(MeterRegistry.class))
                .run(context -> {
                    assertThat(context).hasNotFailed().doesNotHaveBean(PgLockMetrics.class);
                    assertThat(context.getBean(LockTemplate.class).tryRun("no-metrics", () -> { })).isTrue();
                });
    }

    @Test
    void aUserMetricsBeanReplacesTheStartersAndThePropertyTurnsThemOff() {
        runner.withBean("custom", PgLockMetrics.class,
                () -> new PgLockMetrics(new SimpleMeterRegistry(), ObservationRegistry.NOOP)).run(context -> {
                    assertThat(context).hasSingleBean(PgLockMetrics.class);
                    assertThat(context.getBean(PgLockMetrics.class)).isSameAs(context.getBean("custom"));
                });
        runner.withPropertyValues("pglock.metrics.enabled=false")
                .run(context -> assertThat(context).hasNotFailed().doesNotHaveBean(PgLockMetrics.class));
    }

    @Test
    void theHealthIndicatorIsUpWithDetailsAndBacksOffOrTurnsOff() {
        runner.run(context -> {
            HealthIndicator health = context.getBean("pglockHealthIndicator", HealthIndicator.class);
            context.getBean(LockTemplate.class).tryRun("healthy", () -> { });
            Health answer = health.health(true);
            assertThat(answer.getStatus()).isEqualTo(Status.UP);
            assertThat(answer.getDetails()).containsKey("advisory");
            assertThat(((Map<?, ?>) answer.getDetails().get("advisory")).keySet()).asString().contains("held", "lost", "lockSessions",
                    "waitingConnections");
        });
        runner.withPropertyValues("management.health.pglock.enabled=false")
                .run(context -> assertThat(context).doesNotHaveBean("pglockHealthIndicator"));
        runner.withClassLoader(new FilteredClassLoader(HealthIndicator.class))
                .run(context -> assertThat(context).hasNotFailed().doesNotHaveBean("pglockHealthIndicator"));
        runner.withBean("pglockHealthIndicator", HealthIndicator.class, () -> () -> Health.down().build())
                .run(context -> assertThat(context.getBean("pglockHealthIndicator", HealthIndicator.class).health(true)
                        .getStatus()).isEqualTo(Status.DOWN));
    }

    @Test
    void theHealthIndicatorIsDownWithTheReasonWhenTheClientCannotWork() {
        runner.run(context -> {
            HealthIndicator health = context.getBean("pglockHealthIndicator", HealthIndicator.class);
            context.getBean(LockClient.class).close();
            Health answer = health.health(true);
            assertThat(answer.getStatus()).isEqualTo(Status.DOWN);
            assertThat(answer.getDetails().get("advisory").toString()).contains("closed");
        });
    }

    @Test
    void theEndpointExistsOnlyWhenExposedAndWithActuatorOnTheClasspath() {
        runner.run(context -> assertThat(context).doesNotHaveBean(PgLockEndpoint.class));
        runner.withPropertyValues("management.endpoints.web.exposure.include=pglock")
                .run(context -> assertThat(context).hasSingleBean(PgLockEndpoint.class));
        runner.withPropertyValues("management.endpoints.web.exposure.include=pglock")
                .withClassLoader(new FilteredClassLoader(Endpoint.class))
                .run(context -> assertThat(context).hasNotFailed().doesNotHaveBean(PgLockEndpoint.class));
        runner.withPropertyValues("management.endpoints.web.exposure.include=pglock")
                .withBean("mine", PgLockEndpoint.class, () -> new PgLockEndpoint(() -> null))
                .run(context -> assertThat(context).hasSingleBean(PgLockEndpoint.class).hasBean("mine"));
    }

    @Test
    void theEndpointListsReadsAndInLeaseModeForceReleases() {
        runner.withPropertyValues("management.endpoints.web.exposure.include=pglock", "pglock.mode=lease")
                .run(context -> {
                    PgLockEndpoint endpoint = context.getBean(PgLockEndpoint.class);
                    LockClient client = context.getBean(LockClient.class);
                    HeldLock held = client.acquire(LockRequest.of("listed").data(new byte[] {1, 2, 3}));
                    assertThat(endpoint.locks().locks()).anySatisfy(view -> {
                        assertThat(view.key()).isEqualTo("listed");
                        assertThat(view.mine()).isTrue();
                        assertThat(view.dataBytes()).isEqualTo(3);
                        assertThat(view.fencingToken()).isEqualTo(held.fencingToken());
                    });
                    assertThat(endpoint.lock("listed").expiresAt()).isNotNull();
                    assertThat(endpoint.lock("nobody")).isNull();
                    org.assertj.core.api.Assertions.assertThatThrownBy(() -> endpoint.lock("x".repeat(300))).as("a bad key is a bad request (400)")
                            .isInstanceOf(org.springframework.boot.actuate.endpoint.InvalidEndpointRequestException.class)
                            .hasMessageContaining("255");
                    assertThat(endpoint.forceRelease("listed", org.springframework.boot.actuate.endpoint.SecurityContext.NONE)
                            .key()).isEqualTo("listed");
                    assertThat(endpoint.lock("listed")).isNull();
                });
    }
}
