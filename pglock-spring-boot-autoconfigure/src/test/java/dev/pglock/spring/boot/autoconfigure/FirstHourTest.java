package dev.pglock.spring.boot.autoconfigure;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
import dev.pglock.core.PgLock;
import dev.pglock.core.advisory.AdvisoryKeyHasher;
import dev.pglock.spring.DistributedLock;
import dev.pglock.spring.LockOperations;
import dev.pglock.test.PgTestDatabase;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.extension.ExtendWith;
import org.springframework.boot.SpringBootConfiguration;
import org.springframework.boot.WebApplicationType;
import org.springframework.boot.autoconfigure.ImportAutoConfiguration;
import org.springframework.boot.autoconfigure.aop.AopAutoConfiguration;
import org.springframework.boot.builder.SpringApplicationBuilder;
import org.springframework.boot.jdbc.autoconfigure.DataSourceAutoConfiguration;
import org.springframework.boot.jdbc.autoconfigure.DataSourceTransactionManagerAutoConfiguration;
import org.springframework.boot.test.system.CapturedOutput;
import org.springframework.boot.test.system.OutputCaptureExtension;
import org.springframework.boot.transaction.autoconfigure.TransactionAutoConfiguration;
import org.springframework.context.ConfigurableApplicationContext;
import org.springframework.context.annotation.Bean;
import org.springframework.scheduling.annotation.Scheduled;

/**
 * Issue 15: the first hour of a new user. Each test starts a real Spring Boot application (so start-up
 * failures go through Boot's failure analysis, as a user sees them) against the real database.
 */
@ExtendWith(OutputCaptureExtension.class)
class FirstHourTest {

    private static final PgTestDatabase db = PgTestDatabase.get();

    private final String namespace = PgTestDatabase.uniqueName("firsthour");
    private final String table = PgTestDatabase.uniqueName("pglock_firsthour");
    private final List<AutoCloseable> toClose = new ArrayList<>();

    @SpringBootConfiguration
    @ImportAutoConfiguration({DataSourceAutoConfiguration.class, DataSourceTransactionManagerAutoConfiguration.class,
            TransactionAutoConfiguration.class, AopAutoConfiguration.class, PgLockAutoConfiguration.class})
    static class App {
        @Bean
        Jobs jobs() {
            return new Jobs();
        }
    }

    static class Jobs {
        private final AtomicInteger runs = new AtomicInteger();

        /** Read through the proxy: a CGLIB proxy's own fields are not the bean's. */
        public int runs() {
            return runs.get();
        }

        @Scheduled(fixedDelay = 3_600_000, initialDelay = 3_600_000)
        @DistributedLock(key = "'report'")
        public void report() {
            runs.incrementAndGet();
        }

        @DistributedLock(key = "'report'")
        public void reportNow() {
            runs.incrementAndGet();
        }
    }

    private ConfigurableApplicationContext start(String... properties) {
        List<String> all = new ArrayList<>(List.of("spring.datasource.url=" + db.jdbcUrl(),
                "spring.datasource.username=" + db.user(), "spring.datasource.password=" + db.password(),
                "pglock.namespace=" + namespace, "pglock.table.name=" + table, "spring.main.banner-mode=off"));
        all.addAll(List.of(properties));
        ConfigurableApplicationContext context = new SpringApplicationBuilder(App.class)
                .web(WebApplicationType.NONE).logStartupInfo(false).properties(all.toArray(String[]::new)).run();
        toClose.add(context);
        return context;
    }

    /** Starts an application that must fail, and returns what Boot printed about it. */
    private String startFailing(CapturedOutput output, String... properties) {
        int before = output.length();
        assertThatThrownBy(() -> start(properties)).isInstanceOf(RuntimeException.class);
        return output.toString().substring(before);
    }

    private LockClient otherReplica() {
        com.zaxxer.hikari.HikariDataSource pool = db.pooledDataSource(2);
        LockClient client = PgLock.advisory(pool).namespace(namespace).build();
        toClose.add(0, client);
        toClose.add(pool);
        return client;
    }

    @AfterEach
    void cleanUp() throws Exception {
        for (AutoCloseable c : toClose) {
            c.close();
        }
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + table + "; DROP SEQUENCE IF EXISTS " + table + "_fencing_seq");
        }
    }

    // 1. A misspelt property, and what is in effect.

    @Test
    void aMisspeltPropertyStopsTheStartNamingTheClosestRealOne(CapturedOutput output) {
        String report = startFailing(output, "pglock.mdoe=lease");
        assertThat(report).contains("APPLICATION FAILED TO START").contains("pglock has no property 'pglock.mdoe'")
                .contains("Did you mean 'pglock.mode'?").contains("pglock.scheduled.wait");
    }

    @Test
    void oneInfoLineSaysWhichSettingsAreInEffect(CapturedOutput output) {
        start("pglock.mode=lease", "pglock.owner=replica-a");
        assertThat(output).contains("pglock: lease mode, namespace '" + namespace + "', owner 'replica-a")
                .contains("table " + table + " (initialize-schema always), lease PT10S")
                .contains("heartbeat PT2S").contains(db.jdbcUrl());
    }

    // 2. Defaults for @Scheduled methods are their own.

    /** Before: pglock.wait (meant for service calls) made every replica's tick queue for the job. */
    @Test
    void aGlobalWaitDoesNotMakeScheduledMethodsWait() throws Exception {
        ConfigurableApplicationContext context = start("pglock.wait=30s");
        Jobs jobs = context.getBean(Jobs.class);
        LockClient other = otherReplica();
        HeldLock taken = other.acquire(LockRequest.of("report"));

        long started = System.nanoTime();
        jobs.report();
        assertThat(jobs.runs()).as("skipped").isZero();
        assertThat(Duration.ofNanos(System.nanoTime() - started)).as("skipped without waiting pglock.wait")
                .isLessThan(Duration.ofSeconds(10));

        CompletableFuture<Void> waiting = CompletableFuture.runAsync(jobs::reportNow);
        org.awaitility.Awaitility.await().atMost(Duration.ofSeconds(10)).until(() -> waitersInDatabase("report") == 1);
        taken.release();
        waiting.get(20, TimeUnit.SECONDS);
        assertThat(jobs.runs()).as("a service call waits pglock.wait").isEqualTo(1);
    }

    private long waitersInDatabase(String key) throws Exception {
        return db.advisoryWaiters(AdvisoryKeyHasher.lockId(namespace, key));
    }

    @Test
    void scheduledMethodsKeepTheirOwnHoldAtLeast(CapturedOutput output) {
        ConfigurableApplicationContext context = start("pglock.scheduled.hold-at-least=9s");
        assertThat(output).contains("pglock: advisory mode, namespace '" + namespace + "'");
        Jobs jobs = context.getBean(Jobs.class);
        LockClient other = otherReplica();

        jobs.reportNow();
        other.tryAcquire(LockRequest.of("report")).orElseThrow().release(); // a service call keeps nothing
        jobs.report();
        assertThat(other.tryAcquire(LockRequest.of("report"))).as("the scheduled run keeps it 9 s").isEmpty();
    }

    // 3. A refusal says what holds the lock.

    @Test
    void aRefusalByThisClientsOwnHoldAtLeastSaysSo() {
        ConfigurableApplicationContext context = start("pglock.hold-at-least=9s", "pglock.owner=replica-a");
        LockOperations locks = context.getBean(LockOperations.class);
        locks.execute("nightly", lock -> null);
        assertThatThrownBy(() -> locks.execute("nightly", lock -> null)).isInstanceOf(LockNotAcquiredException.class)
                .hasMessageContaining("kept taken until").hasMessageContaining("hold-at-least")
                .hasMessageContaining("this client (replica-a").hasMessageContaining("not held elsewhere");
        otherReplica().acquire(LockRequest.of("elsewhere"));
        assertThatThrownBy(() -> locks.execute("elsewhere", lock -> null)).hasMessageContaining("is held elsewhere");
    }

    // 4. Errors name their cause, through Boot's failure analysis.

    @Test
    void aLeaseTooShortForTheHeartbeatIsReportedAsThePropertyInEitherMode(CapturedOutput output) {
        for (String mode : List.of("lease", "advisory")) {
            String report = startFailing(output, "pglock.mode=" + mode, "pglock.lease=10s",
                    "pglock.heartbeat-interval=5s");
            assertThat(report).as(mode).contains("APPLICATION FAILED TO START")
                    .contains("Invalid value '10s' for configuration property 'pglock.lease'")
                    .contains("must be longer than twice pglock.heartbeat-interval (PT5S)")
                    .doesNotContain("@DistributedLock on");
        }
        assertThat(startFailing(output, "pglock.lease=-1s")).contains("'pglock.lease'").contains("must be positive");
    }

    @Test
    void noDatabaseIsOneSentenceAndWhatToCheck(CapturedOutput output) {
        String report = startFailing(output, "spring.datasource.url=jdbc:postgresql://127.0.0.1:1/nowhere",
                "spring.datasource.hikari.connection-timeout=1000", "pglock.connection-wait-timeout=1s");
        assertThat(report).contains("APPLICATION FAILED TO START")
                .contains("pglock could not start its lock client because the database did not answer")
                .contains("spring.datasource.url");
    }

    @Test
    void aMissingLeaseTableSaysWhereTheDdlIs(CapturedOutput output) {
        String report = startFailing(output, "pglock.mode=lease", "pglock.table.initialize-schema=never");
        assertThat(report).contains("APPLICATION FAILED TO START").contains(table)
                .contains("dev/pglock/core/lease/schema-postgresql.sql").contains("pglock.table.initialize-schema=always");
    }

    @Test
    void aHostileTableNameIsRefusedAsAProperty(CapturedOutput output) {
        String report = startFailing(output, "pglock.mode=lease", "pglock.table.name=locks; drop table users");
        assertThat(report).contains("APPLICATION FAILED TO START")
                .contains("configuration property 'pglock.table.name'").contains("lowercase SQL identifier");
    }

    // 5. Defaults a newcomer expects, and an owner to recognise a replica by.

    @Test
    void defaultsGiveATenSecondTakeoverAndTheOwnerNamesTheReplica() {
        ConfigurableApplicationContext context = start("pglock.mode=lease", "pglock.owner=billing-7");
        PgLockProperties properties = context.getBean(PgLockProperties.class);
        assertThat(properties.getLease()).isEqualTo(Duration.ofSeconds(10));
        assertThat(properties.getHeartbeatInterval()).isEqualTo(Duration.ofSeconds(2));
        assertThat(properties.getScheduled().getWait()).isZero();
        LockClient client = context.getBean(LockClient.class);
        assertThat(client.owner()).startsWith("billing-7");
        client.acquire(LockRequest.of("mine"));
        assertThat(client.get("mine").orElseThrow().owner()).hasValueSatisfying(owner -> assertThat(owner).startsWith("billing-7"));
    }
}
