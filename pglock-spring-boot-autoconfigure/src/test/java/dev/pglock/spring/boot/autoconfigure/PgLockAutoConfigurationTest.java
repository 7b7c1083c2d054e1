package dev.pglock.spring.boot.autoconfigure;

import static org.assertj.core.api.Assertions.assertThat;

import com.zaxxer.hikari.HikariDataSource;
import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockRequest;
import dev.pglock.core.PgLock;
import dev.pglock.spring.DistributedLockAdvisor;
import dev.pglock.spring.LockOperations;
import dev.pglock.spring.LockTemplate;
import dev.pglock.test.CountingDataSource;
import dev.pglock.test.PgTestDatabase;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.util.List;
import javax.sql.DataSource;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.context.properties.source.InvalidConfigurationPropertyValueException;
import org.springframework.boot.jdbc.autoconfigure.DataSourceAutoConfiguration;
import org.springframework.boot.test.context.FilteredClassLoader;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Primary;
import org.springframework.core.io.ClassPathResource;

class PgLockAutoConfigurationTest {

    private static final PgTestDatabase db = PgTestDatabase.get();

    private final String namespace = PgTestDatabase.uniqueName("autoconf");
    private final String table = PgTestDatabase.uniqueName("pglock_autoconf");

    private final ApplicationContextRunner runner = new ApplicationContextRunner()
            .withConfiguration(AutoConfigurations.of(DataSourceAutoConfiguration.class, PgLockAutoConfiguration.class))
            .withPropertyValues("spring.datasource.url=" + db.jdbcUrl(), "spring.datasource.username=" + db.user(),
                    "spring.datasource.password=" + db.password(), "pglock.namespace=" + namespace,
                    "pglock.table.name=" + table);

    @AfterEach
    void dropTable() throws Exception {
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + table + "; DROP SEQUENCE IF EXISTS " + table + "_fencing_seq");
        }
    }

    @Test
    void byDefaultAnAdvisoryClientATemplateAndTheAdvisorOnTheApplicationsDataSource() {
        runner.run(context -> {
            assertThat(context).hasSingleBean(LockClient.class).hasSingleBean(LockTemplate.class)
                    .hasSingleBean(DistributedLockAdvisor.class).hasSingleBean(PgLockClients.class);
            LockClient client = context.getBean(LockClient.class);
            assertThat(client.mode()).isEqualTo(LockMode.ADVISORY);
            assertThat(context.getBean(LockTemplate.class).client()).isSameAs(client);
            assertThat(context.getBean(LockTemplate.class).tryRun("auto", () -> { })).isTrue();
            PgLockProperties properties = context.getBean(PgLockProperties.class);
            assertThat(properties.getLease()).isEqualTo(Duration.ofSeconds(10));
            assertThat(properties.getHeartbeatInterval()).isEqualTo(Duration.ofSeconds(2));
            assertThat(properties.getLockSessions()).isEqualTo(8);
            assertThat(properties.getTable().getInitializeSchema()).isEqualTo(PgLockProperties.InitializeSchema.ALWAYS);
        });
    }

    @Test
    void leaseModeBuildsTheLeaseClientAndItsTable() {
        runner.withPropertyValues("pglock.mode=lease", "pglock.lease=20s", "pglock.heartbeat-interval=2s").run(context -> {
            LockClient client = context.getBean(LockClient.class);
            assertThat(client.mode()).isEqualTo(LockMode.LEASE);
            client.acquire(LockRequest.of("leased")).release();
            try (Connection c = db.connect(); Statement st = c.createStatement()) {
                assertThat(st.executeQuery("SELECT count(*) FROM " + table).next()).isTrue();
            }
        });
    }

    @Test
    void theOtherModeIsBuiltOnlyWhenAskedFor() {
        runner.run(context -> {
            assertThat(tableExists()).as("no lease client, so no lease table, before it is asked for").isFalse();
            LockTemplate template = context.getBean(LockTemplate.class);
            assertThat(template.inMode(LockMode.LEASE).client().mode()).isEqualTo(LockMode.LEASE);
            assertThat(template.inMode(LockMode.ADVISORY)).isSameAs(template);
        });
    }

    @Test
    void everyBeanBacksOffForTheApplicationsOwn() {
        runner.withUserConfiguration(OwnBeans.class).run(context -> {
            assertThat(context).hasSingleBean(LockClient.class).hasSingleBean(LockOperations.class);
            assertThat(context.getBean(LockClient.class)).isSameAs(context.getBean("myClient"));
            assertThat(context.getBean(LockOperations.class)).isSameAs(context.getBean("myTemplate"));
        });
    }

    @Test
    void pglockEnabledFalseTurnsItAllOff() {
        runner.withPropertyValues("pglock.enabled=false").run(context -> assertThat(context)
                .doesNotHaveBean(LockClient.class).doesNotHaveBean(LockTemplate.class)
                .doesNotHaveBean(DistributedLockAdvisor.class).doesNotHaveBean(PgLockClients.class));
    }

    /**
     * A switch reads as its property binds (on/off, yes/no, 1/0), and anything else stops the start
     * naming the property and the value. Before, pglock.enabled=ture turned every lock off without a
     * word (no client, no aspect, and the warning only for "false"), and pglock.metrics.enabled=on
     * turned the metrics off although it bound as true.
     */
    @Test
    void aSwitchThatIsNotABooleanStopsTheStartAndOnOffReadAsTheyBind() {
        runner.withPropertyValues("pglock.enabled=ture").run(context -> {
            assertThat(context).hasFailed();
            assertThat(context.getStartupFailure()).rootCause().hasMessageContaining("ture");
            assertThat(context.getStartupFailure()).hasStackTraceContaining("pglock.enabled");
        });
        runner.withPropertyValues("pglock.enabled=on").run(context -> assertThat(context)
                .hasSingleBean(LockClient.class).hasSingleBean(DistributedLockAdvisor.class));
        runner.withPropertyValues("pglock.enabled=off").run(context -> assertThat(context)
                .doesNotHaveBean(LockClient.class).doesNotHaveBean(DistributedLockAdvisor.class));
    }

    @Test
    void withoutTheCoreOnTheClassPathNothingIsConfigured() {
        runner.withClassLoader(new FilteredClassLoader(LockClient.class)).run(context -> assertThat(context)
                .doesNotHaveBean(PgLockClients.class).doesNotHaveBean(DistributedLockAdvisor.class));
    }

    @Test
    void withoutADataSourceTheClientBacksOffQuietly() {
        new ApplicationContextRunner().withConfiguration(AutoConfigurations.of(PgLockAutoConfiguration.class))
                .run(context -> assertThat(context).hasNotFailed().doesNotHaveBean(LockClient.class));
    }

    @Test
    void aDataSourceMarkedPgLockDataSourceIsUsedInsteadOfThePrimaryOne() {
        runner.withUserConfiguration(TwoDataSources.class).run(context -> {
            CountingDataSource lockOnly = context.getBean("lockDataSource", CountingDataSource.class);
            assertThat(lockOnly.openConnections()).as("the lock session came from the lock DataSource").isEqualTo(1);
            context.getBean(LockClient.class).acquire(LockRequest.of("qualified")).release();
            CountingDataSource primary = context.getBean("primaryDataSource", CountingDataSource.class);
            assertThat(primary.executed()).isEmpty();
        });
    }

    /** A waiter queues in the key's wait line (on the lock DataSource) by default, and not with 0 lines. */
    @Test
    void waitLinesAreTwoByDefaultAndReachTheLeaseClient() {
        for (String lines : List.of("2", "0")) {
            runner.withUserConfiguration(TwoDataSources.class)
                    .withPropertyValues("pglock.mode=lease", "pglock.wait-lines=" + lines).run(context -> {
                        assertThat(new PgLockProperties().getWaitLines()).isEqualTo(2);
                        LockClient client = context.getBean(LockClient.class);
                        CountingDataSource lockOnly = context.getBean("lockDataSource", CountingDataSource.class);
                        try (LockClient other = PgLock.lease(db.simpleDataSource()).tableName(table)
                                .namespace(namespace).build()) {
                            HeldLock held = other.acquire(LockRequest.of("lined"));
                            java.util.concurrent.CompletableFuture<HeldLock> waiter = java.util.concurrent.CompletableFuture
                                    .supplyAsync(() -> client.acquire(LockRequest.of("lined").waitAtMost(Duration.ofMinutes(1))));
                            org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(10))
                                    .until(() -> lockOnly.executedContaining("LISTEN") > 0);
                            held.release();
                            waiter.get(10, java.util.concurrent.TimeUnit.SECONDS).release();
                        }
                        assertThat(lockOnly.executedContaining("pg_advisory_lock(")).as("%s wait lines", lines)
                                .isEqualTo(lines.equals("0") ? 0 : 1);
                    });
        }
    }

    @Test
    void asyncReleaseCommitIsOffByDefaultAndReachesTheLeaseClientsReleasesWhenOn() {
        // Releases that do not wait for the flush set it off for their own transaction, only when asked.
        String setting = "set_config('synchronous_commit', 'off'";
        runner.withUserConfiguration(TwoDataSources.class).withPropertyValues("pglock.mode=lease").run(context -> {
            assertThat(context.getBean(PgLockProperties.class).getTable().isAsyncReleaseCommit()).isFalse();
            context.getBean(LockClient.class).acquire(LockRequest.of("durable")).release();
            assertThat(context.getBean("lockDataSource", CountingDataSource.class).executedContaining(setting)).isZero();
        });
        runner.withUserConfiguration(TwoDataSources.class)
                .withPropertyValues("pglock.mode=lease", "pglock.table.async-release-commit=true").run(context -> {
                    context.getBean(LockClient.class).acquire(LockRequest.of("async")).release();
                    CountingDataSource lockOnly = context.getBean("lockDataSource", CountingDataSource.class);
                    assertThat(lockOnly.executed()).filteredOn(sql -> sql.contains(setting))
                            .singleElement().asString().contains("pg_notify").doesNotContain("nextval");
                });
    }

    @Test
    void aLeaseNotLongerThanTwoHeartbeatsStopsTheStartWithBothValues() {
        assertStartFails("pglock.lease", "PT10S", "pglock.mode=lease", "pglock.lease=10s", "pglock.heartbeat-interval=5s");
    }

    @Test
    void negativeDurationsStopTheStart() {
        assertStartFails("pglock.wait", "PT-1S", "pglock.wait=-1s");
        assertStartFails("pglock.hold-at-least", "PT-5S", "pglock.hold-at-least=-5s");
        assertStartFails("pglock.heartbeat-interval", "PT0S", "pglock.heartbeat-interval=0s");
    }

    /**
     * A bare number is read as milliseconds: {@code heartbeat-interval: 2} meant a heartbeat (or an
     * advisory session check) every 2 ms, and {@code connection-wait-timeout: 5} a 5 ms wait for a
     * connection. Values that short are refused, naming the property and the value.
     */
    @Test
    void aHeartbeatOrConnectionWaitOfAFewMillisecondsStopsTheStart() {
        assertStartFails("pglock.heartbeat-interval", "PT0.002S", "pglock.heartbeat-interval=2");
        assertStartFails("pglock.connection-wait-timeout", "PT0.005S", "pglock.connection-wait-timeout=5");
    }

    @Test
    void aBadTableNameStopsTheStart() {
        assertStartFails("pglock.table.name", "locks; drop table x", "pglock.table.name=locks; drop table x");
    }

    @Test
    void holdAtLeastLongerThanTheLeaseAndBadSessionCountsStopTheStart() {
        assertStartFails("pglock.hold-at-least", "PT1M", "pglock.mode=lease", "pglock.hold-at-least=1m");
        assertStartFails("pglock.lock-sessions", "0", "pglock.lock-sessions=0");
        assertStartFails("pglock.wait-lines", "17", "pglock.wait-lines=17");
        assertStartFails("pglock.wait-lines", "-1", "pglock.wait-lines=-1");
        assertStartFails("pglock.connection-wait-timeout", "PT0S", "pglock.connection-wait-timeout=0s");
        assertStartFails("pglock.lease", "PT-1S", "pglock.mode=lease", "pglock.lease=-1s");
        assertStartFails("pglock.namespace", "x".repeat(256), "pglock.namespace=" + "x".repeat(256));
        assertStartFails("pglock.table.name", "t".repeat(52), "pglock.table.name=" + "t".repeat(52));
    }

    @Test
    void leaseRulesApplyInAdvisoryModeToo() {
        // Issue 15: a method may ask for lease mode, and a value wrong in one mode must not wait for a
        // mode switch to fail (before: accepted in advisory mode, refused after switching to lease).
        runner.withPropertyValues("pglock.hold-at-least=1m", "pglock.heartbeat-interval=20s")
                .run(context -> assertThat(context).hasFailed());
        runner.withPropertyValues("pglock.hold-at-least=1m", "pglock.lease=2m", "pglock.heartbeat-interval=20s")
                .run(context -> assertThat(context).hasNotFailed().hasSingleBean(LockClient.class));
    }

    @Test
    void aLockedMethodWithoutADataSourceStopsTheStartNamingIt() {
        new ApplicationContextRunner().withConfiguration(AutoConfigurations.of(PgLockAutoConfiguration.class,
                org.springframework.boot.autoconfigure.aop.AopAutoConfiguration.class))
                .withBean(Locked.class).run(context -> {
                    assertThat(context).hasFailed();
                    assertThat(context.getStartupFailure()).hasMessageContaining("Locked.run")
                            .hasMessageContaining("DataSource");
                });
    }

    static class Locked {
        @dev.pglock.spring.DistributedLock
        public void run() {
        }
    }

    @Test
    void anUnknownModeStopsTheStartNamingTheProperty() {
        runner.withPropertyValues("pglock.mode=redis").run(context -> {
            assertThat(context).hasFailed();
            assertThat(context.getStartupFailure()).rootCause().hasMessageContaining("redis");
            assertThat(stackMessages(context.getStartupFailure())).contains("pglock.mode");
        });
    }

    @Test
    void configurationMetadataIsGeneratedForTheIde() throws Exception {
        String metadata = new String(new ClassPathResource("META-INF/spring-configuration-metadata.json")
                .getInputStream().readAllBytes());
        assertThat(metadata).contains("\"pglock.mode\"", "\"pglock.wait\"", "\"pglock.lease\"",
                "\"pglock.hold-at-least\"", "\"pglock.heartbeat-interval\"", "\"pglock.table.name\"",
                "\"pglock.table.initialize-schema\"", "\"pglock.lock-sessions\"", "\"pglock.connection-wait-timeout\"",
                "\"pglock.aspect-order\"", "\"pglock.namespace\"", "\"pglock.enabled\"", "\"pglock.advisory.fencing-tokens\"",
                "\"pglock.table.async-release-commit\"", "\"pglock.wait-lines\"");
    }

    /** The typo hints know every property, the adapters' switches too (their group is nested in another). */
    @Test
    void theTypoHintsKnowEveryProperty() {
        assertThat(PgLockFailureAnalyzer.knownNames()).contains("pglock.adapters.shedlock.enabled",
                "pglock.adapters.spring-integration.enabled", "pglock.metrics.enabled", "pglock.enabled",
                "pglock.table.name");
    }

    /** {@code value} as the message shows it: durations in ISO-8601 once bound. */
    private void assertStartFails(String property, String value, String... properties) {
        runner.withPropertyValues(properties).run(context -> {
            assertThat(context).hasFailed();
            assertThat(context.getStartupFailure()).hasRootCauseInstanceOf(InvalidConfigurationPropertyValueException.class);
            assertThat(context.getStartupFailure()).rootCause().hasMessageContaining(property).hasMessageContaining(value);
        });
    }

    private boolean tableExists() throws Exception {
        try (Connection c = db.connect(); Statement st = c.createStatement();
                var rs = st.executeQuery("SELECT to_regclass('" + table + "') IS NOT NULL")) {
            rs.next();
            return rs.getBoolean(1);
        }
    }

    private static String stackMessages(Throwable t) {
        StringBuilder all = new StringBuilder();
        for (Throwable c = t; c != null; c = c.getCause()) {
            all.append(c.getMessage()).append('\n');
        }
        return all.toString();
    }

    @Configuration(proxyBeanMethods = false)
    static class OwnBeans {
        @Bean(destroyMethod = "close")
        LockClient myClient(DataSource dataSource) {
            return PgLock.advisory(dataSource).namespace("own").build();
        }

        @Bean
        LockTemplate myTemplate(LockClient myClient) {
            return new LockTemplate(myClient);
        }
    }

    @Configuration(proxyBeanMethods = false)
    static class TwoDataSources {
        @Bean(destroyMethod = "")
        @Primary
        CountingDataSource primaryDataSource() {
            return new CountingDataSource(pool());
        }

        @Bean(destroyMethod = "")
        @PgLockDataSource
        CountingDataSource lockDataSource() {
            return new CountingDataSource(pool());
        }

        @Bean
        HikariDataSource unused() {
            return pool();
        }

        private static HikariDataSource pool() {
            return db.pooledDataSource(4);
        }
    }
}
