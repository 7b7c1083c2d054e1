package dev.pglock.spring.adapters;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import com.zaxxer.hikari.HikariDataSource;
import dev.pglock.core.LockClient;
import dev.pglock.core.PgLock;
import dev.pglock.test.PgTestDatabase;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.locks.Lock;
import net.javacrumbs.shedlock.core.DefaultLockingTaskExecutor;
import net.javacrumbs.shedlock.core.LockConfiguration;
import net.javacrumbs.shedlock.core.SimpleLock;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;
import org.springframework.integration.leader.DefaultCandidate;
import org.springframework.integration.support.leader.LockRegistryLeaderInitiator;

/**
 * The adapters against the peers' own expectations, on a real database, in both modes: two clients
 * stand for two replicas.
 */
class PgLockAdaptersTest {

    private static final Duration HEARTBEAT = Duration.ofMillis(300);

    private final PgTestDatabase db = PgTestDatabase.get();
    private final String namespace = PgTestDatabase.uniqueName("adapters");
    private final String table = PgTestDatabase.uniqueName("pglock_adapters");
    private final HikariDataSource pool = db.pooledDataSource(16);
    private final List<AutoCloseable> toClose = new ArrayList<>();

    @AfterEach
    void cleanUp() throws Exception {
        for (AutoCloseable c : toClose) {
            c.close();
        }
        pool.close();
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("DROP TABLE IF EXISTS " + table + "; DROP SEQUENCE IF EXISTS " + table + "_fencing_seq");
        }
    }

    private LockClient replica(String mode) {
        LockClient client = "lease".equals(mode)
                ? PgLock.lease(pool).namespace(namespace).tableName(table).lease(Duration.ofSeconds(3))
                        .heartbeatInterval(HEARTBEAT).build()
                : PgLock.advisory(pool).namespace(namespace).heartbeatInterval(HEARTBEAT).build();
        toClose.add(0, client);
        return client;
    }

    private static LockConfiguration shedLock(String name, Duration atMost, Duration atLeast) {
        return new LockConfiguration(Instant.now(), name, atMost, atLeast);
    }

    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void aShedLockLockIsExclusiveAcrossTwoProviders(String mode) {
        PgLockShedLockProvider a = new PgLockShedLockProvider(replica(mode), HEARTBEAT);
        PgLockShedLockProvider b = new PgLockShedLockProvider(replica(mode), HEARTBEAT);

        SimpleLock held = a.lock(shedLock("report", Duration.ofMinutes(10), Duration.ZERO)).orElseThrow();
        assertThat(b.lock(shedLock("report", Duration.ofMinutes(10), Duration.ZERO))).isEmpty();
        assertThat(a.lock(shedLock("report", Duration.ofMinutes(10), Duration.ZERO)))
                .as("not re-entrant, like ShedLock's own providers").isEmpty();
        assertThat(held.extend(Duration.ofMinutes(10), Duration.ZERO)).isPresent();
        held.unlock();
        assertThat(b.lock(shedLock("report", Duration.ofMinutes(10), Duration.ZERO))).isPresent();
    }

    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void lockAtLeastForKeepsTheLockTakenAfterAnEarlyUnlock(String mode) {
        PgLockShedLockProvider a = new PgLockShedLockProvider(replica(mode), HEARTBEAT);
        PgLockShedLockProvider b = new PgLockShedLockProvider(replica(mode), HEARTBEAT);
        Duration atLeast = Duration.ofMillis(1500);

        long start = System.nanoTime();
        a.lock(shedLock("tick", Duration.ofSeconds(30), atLeast)).orElseThrow().unlock();
        assertThat(b.lock(shedLock("tick", Duration.ofSeconds(30), Duration.ZERO))).as("taken until lockAtLeastFor")
                .isEmpty();
        await().atMost(Duration.ofSeconds(10)).pollInterval(Duration.ofMillis(50))
                .until(() -> b.lock(shedLock("tick", Duration.ofSeconds(30), Duration.ZERO)).isPresent());
        assertThat(Duration.ofNanos(System.nanoTime() - start)).isGreaterThanOrEqualTo(atLeast.minusMillis(100));
    }

    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void shedLocksOwnExecutorRunsATaskOnOneReplicaOnly(String mode) {
        DefaultLockingTaskExecutor a = new DefaultLockingTaskExecutor(new PgLockShedLockProvider(replica(mode), HEARTBEAT));
        DefaultLockingTaskExecutor b = new DefaultLockingTaskExecutor(new PgLockShedLockProvider(replica(mode), HEARTBEAT));
        AtomicBoolean ranOnB = new AtomicBoolean();
        AtomicBoolean ranOnA = new AtomicBoolean();
        a.executeWithLock((Runnable) () -> {
            ranOnA.set(true);
            // Another thread, as another replica's scheduler (ShedLock runs a same-thread nested call directly).
            CompletableFuture.runAsync(() -> b.executeWithLock((Runnable) () -> ranOnB.set(true),
                    shedLock("job", Duration.ofMinutes(1), Duration.ZERO))).join();
        }, shedLock("job", Duration.ofMinutes(1), Duration.ZERO));
        assertThat(ranOnA).isTrue();
        assertThat(ranOnB).as("B skipped while A ran").isFalse();
        b.executeWithLock((Runnable) () -> ranOnB.set(true), shedLock("job", Duration.ofMinutes(1), Duration.ZERO));
        assertThat(ranOnB).isTrue();
    }

    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void theRegistryKeepsTheLockContract(String mode) throws Exception {
        PgLockRegistry a = new PgLockRegistry(replica(mode));
        PgLockRegistry b = new PgLockRegistry(replica(mode));
        Lock lockA = a.obtain("orders");
        Lock lockB = b.obtain("orders");

        assertThat(lockA.tryLock()).isTrue();
        assertThat(lockA.tryLock()).as("re-entrant for the holding thread").isTrue();
        assertThat(lockB.tryLock()).isFalse();
        long start = System.nanoTime();
        assertThat(lockB.tryLock(300, TimeUnit.MILLISECONDS)).isFalse();
        assertThat(Duration.ofNanos(System.nanoTime() - start)).isGreaterThanOrEqualTo(Duration.ofMillis(250));
        assertThatThrownBy(lockB::unlock).isInstanceOf(IllegalStateException.class).hasMessageContaining("orders");
        assertThatThrownBy(() -> CompletableFuture.runAsync(lockA::unlock).join())
                .hasCauseInstanceOf(IllegalStateException.class);
        a.renewLock("orders");
        assertThatThrownBy(() -> b.renewLock("orders")).isInstanceOf(IllegalStateException.class);

        CompletableFuture<Boolean> waiter = CompletableFuture.supplyAsync(() -> {
            try {
                return lockB.tryLock(20, TimeUnit.SECONDS);
            } catch (InterruptedException e) {
                throw new IllegalStateException(e);
            }
        });
        lockA.unlock();
        assertThat(waiter).isNotDone(); // still held once
        lockA.unlock();
        assertThat(waiter.get(10, TimeUnit.SECONDS)).as("the waiter got it after the outer unlock").isTrue();
        assertThat(lockA.tryLock()).isFalse();
        assertThatThrownBy(lockA::newCondition).isInstanceOf(UnsupportedOperationException.class);
        assertThatThrownBy(() -> a.obtain(42)).isInstanceOf(IllegalArgumentException.class)
                .hasMessageContaining("String");
    }

    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void executeLockedAndTheLeaderInitiatorWorkOnTheRegistry(String mode) throws Exception {
        PgLockRegistry a = new PgLockRegistry(replica(mode));
        PgLockRegistry b = new PgLockRegistry(replica(mode));
        assertThat(a.executeLocked("batch", () -> "done")).isEqualTo("done");

        LockRegistryLeaderInitiator first = new LockRegistryLeaderInitiator(a, new DefaultCandidate("a", "cluster"));
        LockRegistryLeaderInitiator second = new LockRegistryLeaderInitiator(b, new DefaultCandidate("b", "cluster"));
        first.setHeartBeatMillis(200);
        second.setHeartBeatMillis(200);
        first.start();
        await().atMost(Duration.ofSeconds(10)).until(() -> first.getContext().isLeader());
        second.start();
        try {
            Thread.sleep(600); // three of its heartbeats: B must not become leader meanwhile
            assertThat(second.getContext().isLeader()).isFalse();
            first.stop();
            await().atMost(Duration.ofSeconds(10)).until(() -> second.getContext().isLeader());
            assertThat(first.getContext().isLeader()).isFalse();
        } finally {
            first.stop();
            second.stop();
        }
    }
}
