package dev.pglock.spring.adapters;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import com.zaxxer.hikari.HikariDataSource;
import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockRequest;
import dev.pglock.core.PgLock;
import dev.pglock.test.PgTestDatabase;
import java.sql.Connection;
import java.sql.Statement;
import java.time.Duration;
import java.time.Instant;
import java.util.ArrayList;
import java.util.List;
import java.util.Optional;
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

    /**
     * An extension's lockAtLeastFor counts, as in ShedLock: unlocked early after
     * extendActiveLock(atMost, atLeast), the key stays taken until that has passed. Before, extend
     * only checked the lock was still held, and the key was free at once.
     */
    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void anExtensionsLockAtLeastForKeepsTheLockTakenAfterAnEarlyUnlock(String mode) {
        PgLockShedLockProvider a = new PgLockShedLockProvider(replica(mode), HEARTBEAT);
        PgLockShedLockProvider b = new PgLockShedLockProvider(replica(mode), HEARTBEAT);
        Duration atLeast = Duration.ofMillis(1500);

        SimpleLock held = a.lock(shedLock("extended", Duration.ofSeconds(30), Duration.ZERO)).orElseThrow();
        long start = System.nanoTime();
        SimpleLock extended = held.extend(Duration.ofSeconds(30), atLeast).orElseThrow();
        extended.unlock();
        assertThat(b.lock(shedLock("extended", Duration.ofSeconds(30), Duration.ZERO)))
                .as("taken until the extension's lockAtLeastFor").isEmpty();
        await().atMost(Duration.ofSeconds(10)).pollInterval(Duration.ofMillis(50))
                .until(() -> b.lock(shedLock("extended", Duration.ofSeconds(30), Duration.ZERO)).isPresent());
        assertThat(Duration.ofNanos(System.nanoTime() - start)).isGreaterThanOrEqualTo(atLeast.minusMillis(100));
    }

    /**
     * lockInterruptibly (and so executeLocked) gives up when interrupted while it waits, and takes
     * nothing: in advisory mode the wait blocks in the driver, which cannot see the interrupt, so it
     * waits in steps of 5 s. Before, a step was an hour, and the interrupted thread took the
     * lock and ran its work when the holder released.
     */
    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void anInterruptedLockInterruptiblyGivesUpAndTakesNothing(String mode) throws Exception {
        PgLockRegistry a = new PgLockRegistry(replica(mode));
        LockClient waitingClient = replica(mode);
        PgLockRegistry b = new PgLockRegistry(waitingClient);
        Lock held = a.obtain("interruptible");
        held.lock();
        java.util.concurrent.atomic.AtomicReference<Thread> waiter = new java.util.concurrent.atomic.AtomicReference<>();
        CompletableFuture<Throwable> outcome = CompletableFuture.supplyAsync(() -> {
            waiter.set(Thread.currentThread()); // set before it waits: awaitWaiting below sees it then
            try {
                b.obtain("interruptible").lockInterruptibly();
                return null;
            } catch (Throwable e) {
                return e;
            }
        });
        awaitWaiting(waitingClient);
        waiter.get().interrupt();

        assertThat(outcome.get(30, TimeUnit.SECONDS)).as("within a step of 5 s").isInstanceOf(InterruptedException.class);
        held.unlock();
        assertThat(a.obtain("interruptible").tryLock()).as("the interrupted waiter took nothing").isTrue();
        a.obtain("interruptible").unlock();
    }

    /**
     * Until a caller of {@code client} waits: in advisory mode on a connection blocked in the server
     * (a socket read, which an interrupt cannot end); in lease mode through its LISTEN connection.
     */
    private static void awaitWaiting(LockClient client) {
        await().atMost(Duration.ofSeconds(10)).until(() -> client.status().waitingConnections() > 0);
    }

    /**
     * Lock objects that a thread waits on are not expired, and recently used ones are kept for the
     * age given. Before, expireUnusedOlderThan removed every object nobody held, a waiter's too: the
     * waiter then held the lock through an object the registry no longer knew, and renewLock said
     * it did not hold it.
     */
    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void expiringUnusedLocksKeepsAWaitersLock(String mode) throws Exception {
        PgLockRegistry a = new PgLockRegistry(replica(mode));
        LockClient waitingClient = replica(mode);
        PgLockRegistry b = new PgLockRegistry(waitingClient);
        Lock held = a.obtain("expiring");
        held.lock();
        CompletableFuture<Void> waiter = CompletableFuture.runAsync(() -> {
            Lock lock = b.obtain("expiring");
            try {
                assertThat(lock.tryLock(20, TimeUnit.SECONDS)).isTrue();
            } catch (InterruptedException e) {
                throw new IllegalStateException(e);
            }
            b.renewLock("expiring"); // the registry still knows the waiter's lock
            lock.unlock();
        });
        awaitWaiting(waitingClient);
        b.expireUnusedOlderThan(0);
        held.unlock();
        waiter.get(20, TimeUnit.SECONDS);

        a.obtain("recent");
        a.expireUnusedOlderThan(60_000);
        assertThat(a.toString()).as("used within the age: kept").contains("recent");
        a.expireUnusedOlderThan(0);
        assertThat(a.toString()).doesNotContain("recent");
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

    /**
     * Review: a leader whose lock was lost re-took it in its next heartbeat's tryLock (the lost hold
     * was still on its thread, so Spring Integration counted it a re-entry) and then unlocked once:
     * that released the fresh lock in the database while the initiator went on leading, and another
     * replica took the key (before, nobody competing, it never stepped down). Now a thread's lost holds
     * make its next take fail (and are dropped), so the initiator steps down at its next heartbeat.
     */
    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void aLeaderWhoseLockWasLostStepsDownBeforeAnotherReplicaTakesTheKey(String mode) throws Exception {
        java.util.concurrent.CountDownLatch foundLost = new java.util.concurrent.CountDownLatch(1);
        LockClient clientA = clientTellingLosses(mode, foundLost);
        LockClient other = replica(mode);
        PgLockRegistry a = new PgLockRegistry(clientA);
        LockRegistryLeaderInitiator initiator = new LockRegistryLeaderInitiator(a, new DefaultCandidate("a", "lost"));
        initiator.setHeartBeatMillis(100);
        java.util.concurrent.atomic.AtomicBoolean revoked = new java.util.concurrent.atomic.AtomicBoolean();
        initiator.setLeaderEventPublisher(new org.springframework.integration.leader.event.DefaultLeaderEventPublisher(
                event -> {
                    if (event instanceof org.springframework.integration.leader.event.OnRevokedEvent) {
                        revoked.set(true);
                    }
                }));
        initiator.start();
        try {
            await().atMost(Duration.ofSeconds(10)).until(() -> initiator.getContext().isLeader());
            breakInDatabase(mode, "lost");
            assertThat(foundLost.await(10, TimeUnit.SECONDS)).as("A's client found the loss").isTrue();
            // Nobody else wants the key: before, the initiator re-took and dropped it every heartbeat
            // and never stepped down.
            await("the initiator steps down").atMost(Duration.ofSeconds(5)).untilTrue(revoked);
            await("and is elected anew").atMost(Duration.ofSeconds(10)).until(() -> initiator.getContext().isLeader());
            // Its heartbeats' re-entries keep the key now: another replica cannot take it.
            await().during(Duration.ofMillis(500)).atMost(Duration.ofSeconds(2)).until(() -> {
                Optional<HeldLock> taken = other.tryAcquire(LockRequest.of("lost"));
                taken.ifPresent(HeldLock::close);
                return taken.isEmpty() && initiator.getContext().isLeader();
            });
        } finally {
            initiator.stop();
        }
    }

    /**
     * Review: a thread's hold was lost between its next tryLock()'s check and its take, which then
     * took the key afresh (the client had already forgotten the lost lock), so the thread held [lost,
     * live]. Its next tryLock() dropped both without giving the live one back: the key stayed with
     * this client, renewed, until it closed, and no other replica could take it. Forced by a hook
     * between the check and the take.
     */
    @ParameterizedTest
    @ValueSource(strings = {"advisory", "lease"})
    void aLiveHoldDroppedWithALostOneIsGivenBack(String mode) throws Exception {
        java.util.concurrent.CountDownLatch foundLost = new java.util.concurrent.CountDownLatch(1);
        LockClient clientA = clientTellingLosses(mode, foundLost);
        LockClient other = replica(mode);
        java.util.concurrent.locks.Lock lock = new PgLockRegistry(clientA).obtain("dropped");
        assertThat(lock.tryLock()).isTrue();
        java.util.concurrent.atomic.AtomicBoolean broke = new java.util.concurrent.atomic.AtomicBoolean();
        PgLockRegistry.beforeTakeForTests = () -> {
            if (broke.compareAndSet(false, true)) {
                try {
                    breakInDatabase(mode, "dropped");
                    assertThat(foundLost.await(10, TimeUnit.SECONDS)).as("A's client found the loss").isTrue();
                } catch (Exception e) {
                    throw new IllegalStateException(e);
                }
            }
        };
        try {
            assertThat(lock.tryLock()).as("taken afresh after the check").isTrue();
            assertThat(broke).isTrue();
        } finally {
            PgLockRegistry.beforeTakeForTests = null;
        }

        assertThat(lock.tryLock()).as("the lost hold makes the next take fail").isFalse();

        Optional<HeldLock> taken = other.tryAcquire(LockRequest.of("dropped"));
        assertThat(taken).as("the live hold was given back").isPresent();
        taken.get().close();
        assertThat(lock.tryLock()).as("and the thread takes it afresh").isTrue();
        lock.unlock();
    }

    /** A client of {@code mode} on the test's pool that counts {@code foundLost} down at each loss it finds. */
    private LockClient clientTellingLosses(String mode, java.util.concurrent.CountDownLatch foundLost) {
        dev.pglock.core.LockObserver lossHeard = new dev.pglock.core.LockObserver() {
            @Override
            public void lost(dev.pglock.core.LockMode lockMode, String key, dev.pglock.core.LockLostException.Reason reason) {
                foundLost.countDown();
            }
        };
        LockClient client = "lease".equals(mode)
                ? PgLock.lease(pool).namespace(namespace).tableName(table).lease(Duration.ofSeconds(3))
                        .heartbeatInterval(HEARTBEAT).observer(lossHeard).build()
                : PgLock.advisory(pool).namespace(namespace).heartbeatInterval(HEARTBEAT).observer(lossHeard).build();
        toClose.add(0, client);
        return client;
    }

    /** Makes the database forget the lock on {@code key} behind its holder's back: ends its session, or deletes its row. */
    private void breakInDatabase(String mode, String key) throws java.sql.SQLException {
        try (Connection c = db.connect(); Statement st = c.createStatement()) {
            st.execute("advisory".equals(mode)
                    ? "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1"
                            + " AND granted AND ((classid::bigint << 32) | objid::bigint) = "
                            + dev.pglock.core.advisory.AdvisoryKeyHasher.lockId(namespace, key)
                    : "DELETE FROM " + table + " WHERE namespace = '" + namespace + "' AND lock_key = '" + key + "'");
        }
    }
}
