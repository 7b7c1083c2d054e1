package dev.pglock.core;

import static org.assertj.core.api.Assertions.assertThat;
import static org.assertj.core.api.Assertions.assertThatThrownBy;
import static org.awaitility.Awaitility.await;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLongArray;
import java.util.concurrent.atomic.AtomicReference;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.TestInfo;
import org.slf4j.LoggerFactory;
import org.junit.jupiter.api.Test;

/**
 * The behaviour every lock mode owes its users, run against a real PostgreSQL by one subclass per
 * mode. Each test gets clients of its own (own namespace or table), so the suite can share a server.
 */
public abstract class LockClientContractTest {

    /** Generous bound for anything that should happen "at once" (a wake-up, a hand-off). */
    protected static final Duration PROMPTLY = Duration.ofSeconds(3);

    private final List<AutoCloseable> toClose = new ArrayList<>();
    private final ExecutorService threads = Executors.newCachedThreadPool();

    /** A new client on this test's isolated namespace or table; several may exist at once (several replicas). */
    protected abstract LockClient newClient();

    /** Makes the database forget {@code lock} behind its holder's back, the way production loses one. */
    protected abstract void breakLock(LockClient holder, HeldLock lock) throws Exception;

    /** Waits until some client waits in the database for {@code key}. */
    protected abstract void awaitWaiterInDatabase(String key) throws Exception;

    /** How long after {@link #breakLock} the holder may take to notice; the mode's heartbeat plus margin. */
    protected abstract Duration lossNoticedWithin();

    /** A client the test closes for you. */
    protected final LockClient client() {
        return closeLater(newClient());
    }

    protected final <T extends AutoCloseable> T closeLater(T closeable) {
        toClose.add(0, closeable);
        return closeable;
    }

    @BeforeEach
    void logTestName(TestInfo test) {
        LoggerFactory.getLogger(getClass()).info("---- {}", test.getDisplayName());
    }

    @AfterEach
    void closeClients() throws Exception {
        threads.shutdownNow();
        for (AutoCloseable c : toClose) {
            c.close();
        }
    }

    private <T> Future<T> inThread(java.util.concurrent.Callable<T> task) {
        return threads.submit(task);
    }

    @Test
    void aFreeLockIsTakenAndExcludesEveryOtherClient() {
        LockClient a = client();
        LockClient b = client();

        HeldLock held = a.tryAcquire(LockRequest.of("job")).orElseThrow();
        assertThat(held.isHeld()).isTrue();
        assertThat(held.key()).isEqualTo("job");
        assertThat(held.owner()).isEqualTo(a.owner()).isNotEqualTo(b.owner());
        assertThat(b.tryAcquire(LockRequest.of("job"))).isEmpty();
        assertThat(b.tryAcquire(LockRequest.of("other-job"))).isPresent();

        assertThat(held.release()).isTrue();
        assertThat(held.isHeld()).isFalse();
        assertThat(b.tryAcquire(LockRequest.of("job"))).isPresent();
    }

    @Test
    void aWaiterWakesPromptlyWhenTheHolderReleases() throws Exception {
        LockClient a = client();
        LockClient b = client();
        HeldLock held = a.acquire(LockRequest.of("handoff"));

        Future<Long> woke = inThread(() -> {
            b.acquire(LockRequest.of("handoff").waitAtMost(Duration.ofSeconds(60))).release();
            return System.nanoTime();
        });
        awaitWaiterInDatabase("handoff");
        long released = System.nanoTime();
        held.release();

        long wokeAt = woke.get(PROMPTLY.toSeconds(), TimeUnit.SECONDS);
        assertThat(Duration.ofNanos(wokeAt - released)).isLessThan(PROMPTLY);
    }

    @Test
    void aWaiterGivesUpWhenTheWaitRunsOut() {
        LockClient a = client();
        LockClient b = client();
        a.acquire(LockRequest.of("busy"));

        long start = System.nanoTime();
        assertThatThrownBy(() -> b.acquire(LockRequest.of("busy").waitAtMost(Duration.ofMillis(500))))
                .isInstanceOf(LockNotAcquiredException.class)
                .hasMessageContaining("busy")
                .satisfies(e -> assertThat(((LockNotAcquiredException) e).key()).isEqualTo("busy"));
        Duration waited = Duration.ofNanos(System.nanoTime() - start);
        assertThat(waited).isGreaterThanOrEqualTo(Duration.ofMillis(450)).isLessThan(Duration.ofSeconds(5));

        assertThat(b.tryAcquire(LockRequest.of("busy").waitAtMost(Duration.ofMillis(200)))).isEmpty();
    }

    @Test
    void sharedHoldersCoexistAndExcludeAnExclusiveOne() {
        LockClient a = client();
        LockClient b = client();
        LockClient c = client();

        HeldLock readerA = a.tryAcquire(LockRequest.of("report").shared()).orElseThrow();
        HeldLock readerB = b.tryAcquire(LockRequest.of("report").shared()).orElseThrow();
        assertThat(readerA.isShared()).isTrue();
        assertThat(c.tryAcquire(LockRequest.of("report"))).isEmpty();

        readerA.release();
        assertThat(c.tryAcquire(LockRequest.of("report"))).isEmpty();
        readerB.release();
        HeldLock writer = c.tryAcquire(LockRequest.of("report")).orElseThrow();
        assertThat(a.tryAcquire(LockRequest.of("report").shared())).isEmpty();
        writer.release();
        assertThat(a.tryAcquire(LockRequest.of("report").shared())).isPresent();
    }

    @Test
    void threadsOfOneClientShareASharedLockAndAreExcludedByAnExclusiveOne() throws Exception {
        LockClient a = client();
        HeldLock reader = a.acquire(LockRequest.of("cache").shared());
        assertThat(inThread(() -> a.tryAcquire(LockRequest.of("cache").shared()).map(HeldLock::release)).get())
                .contains(true);
        assertThat(inThread(() -> a.tryAcquire(LockRequest.of("cache"))).get()).isEmpty();
        reader.release();
        assertThat(inThread(() -> a.tryAcquire(LockRequest.of("cache")).map(HeldLock::release)).get()).contains(true);
    }

    @Test
    void theHoldingThreadReentersAndMustReleaseAsOftenAsItAcquired() throws Exception {
        LockClient a = client();
        LockClient b = client();

        HeldLock outer = a.acquire(LockRequest.of("nested"));
        HeldLock inner = a.tryAcquire(LockRequest.of("nested")).orElseThrow();
        assertThat(inner.isHeld()).isTrue();
        assertThat(inThread(() -> a.tryAcquire(LockRequest.of("nested"))).get()).isEmpty();
        assertThat(b.tryAcquire(LockRequest.of("nested"))).isEmpty();

        inner.release();
        assertThat(outer.isHeld()).isTrue();
        assertThat(inThread(() -> a.tryAcquire(LockRequest.of("nested"))).get()).isEmpty();
        assertThat(b.tryAcquire(LockRequest.of("nested"))).isEmpty();

        outer.release();
        assertThat(b.tryAcquire(LockRequest.of("nested"))).isPresent();
    }

    @Test
    void releasingTwiceDoesNotReleaseAnOuterHold() {
        LockClient a = client();
        LockClient b = client();
        HeldLock outer = a.acquire(LockRequest.of("twice"));
        HeldLock inner = a.acquire(LockRequest.of("twice"));

        assertThat(inner.release()).isTrue();
        assertThat(inner.release()).isFalse();
        inner.close();

        assertThat(outer.isHeld()).isTrue();
        assertThat(b.tryAcquire(LockRequest.of("twice"))).isEmpty();
        outer.close();
        assertThat(b.tryAcquire(LockRequest.of("twice"))).isPresent();
    }

    @Test
    void anotherThreadCannotReleaseTheLock() throws Exception {
        LockClient a = client();
        LockClient b = client();
        HeldLock held = a.acquire(LockRequest.of("mine"));

        Future<?> attempt = inThread(held::release);
        assertThatThrownBy(attempt::get).hasCauseInstanceOf(IllegalStateException.class)
                .cause().hasMessageContaining("mine").hasMessageContaining("stays held");
        assertThat(held.isHeld()).isTrue();
        assertThat(b.tryAcquire(LockRequest.of("mine"))).isEmpty();
    }

    @Test
    void anUpgradeFromSharedToExclusiveIsRefusedInsteadOfDeadlocking() {
        LockClient a = client();
        a.acquire(LockRequest.of("upgrade").shared());
        assertThatThrownBy(() -> a.acquire(LockRequest.of("upgrade").waitAtMost(Duration.ofSeconds(30))))
                .isInstanceOf(IllegalStateException.class).hasMessageContaining("upgrade");
    }

    @Test
    void closingTheClientReleasesEverythingAndTellsTheHolders() {
        LockClient a = newClient();
        LockClient b = client();
        ConcurrentLinkedQueue<LockLostException> lost = new ConcurrentLinkedQueue<>();
        List<HeldLock> held = new ArrayList<>();
        for (String key : List.of("c1", "c2", "c3")) {
            held.add(a.acquire(LockRequest.of(key)).onLost(lost::add));
        }
        HeldLock shared = a.acquire(LockRequest.of("c4").shared()).onLost(lost::add);

        a.close();
        a.close(); // idempotent

        assertThat(lost).hasSize(4).allSatisfy(e -> assertThat(e).hasMessageContaining("closed"));
        assertThat(held).noneMatch(HeldLock::isHeld);
        assertThat(shared.isHeld()).isFalse();
        for (String key : List.of("c1", "c2", "c3", "c4")) {
            assertThat(b.tryAcquire(LockRequest.of(key))).as(key).isPresent();
        }
        assertThatThrownBy(() -> a.tryAcquire(LockRequest.of("c5"))).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("closed");
        assertThatThrownBy(a::list).isInstanceOf(IllegalStateException.class);
        assertThat(held.get(0).release()).isFalse();
    }

    @Test
    void aLostLockIsReportedAndTheClientKeepsWorking() throws Exception {
        LockClient a = client();
        LockClient b = client();
        HeldLock held = a.acquire(LockRequest.of("fragile"));
        CompletableFuture<LockLostException> told = new CompletableFuture<>();
        held.onLost(told::complete);

        breakLock(a, held);

        LockLostException lost = told.get(lossNoticedWithin().toMillis(), TimeUnit.MILLISECONDS);
        assertThat(lost.key()).isEqualTo("fragile");
        assertThat(held.isHeld()).isFalse();
        assertThatThrownBy(held::assertHeld).isInstanceOf(LockLostException.class).hasMessageContaining("fragile");
        AtomicReference<LockLostException> late = new AtomicReference<>();
        held.onLost(late::set);
        assertThat(late.get()).as("a listener added after the loss hears at once").isNotNull();
        assertThat(held.release()).isFalse();

        assertThat(b.tryAcquire(LockRequest.of("fragile"))).isPresent();
        assertThat(a.tryAcquire(LockRequest.of("after-loss"))).isPresent();
        assertThat(a.tryAcquire(LockRequest.of("fragile"))).isEmpty();
    }

    @Test
    void getReadsALockWithoutTakingItAndListShowsIt() {
        LockClient a = client();
        LockClient b = client();
        HeldLock held = a.acquire(LockRequest.of("visible"));

        LockInfo own = a.get("visible").orElseThrow();
        assertThat(own.key()).contains("visible");
        assertThat(own.isHeldByThisClient()).isTrue();
        assertThat(own.owner()).contains(a.owner());
        assertThat(own.mode()).isEqualTo(a.mode());

        LockInfo seen = b.get("visible").orElseThrow();
        assertThat(seen.isHeldByThisClient()).isFalse();
        assertThat(b.tryAcquire(LockRequest.of("visible"))).as("get does not take the lock").isEmpty();
        assertThat(b.get("nobody-holds-this")).isEmpty();
        assertThat(b.list()).anySatisfy(info -> assertThat(info.isHeldByThisClient()).isFalse());
        assertThat(a.list()).anySatisfy(info -> assertThat(info.key()).contains("visible"));

        held.release();
        assertThat(b.get("visible")).isEmpty();
    }

    @Test
    void fencingTokensGrowWithEveryAcquisitionByAnyClient() {
        LockClient a = client();
        LockClient b = client();
        long last = Long.MIN_VALUE;
        for (int i = 0; i < 6; i++) {
            LockClient c = i % 2 == 0 ? a : b;
            try (HeldLock held = c.acquire(LockRequest.of("fenced"))) {
                assertThat(held.fencingToken()).isGreaterThan(last);
                try (HeldLock again = c.acquire(LockRequest.of("fenced"))) {
                    assertThat(again.fencingToken()).as("re-entry shares the token").isEqualTo(held.fencingToken());
                }
                last = held.fencingToken();
            }
        }
    }

    @Test
    void holdAtLeastKeepsTheLockTakenAfterAnEarlyRelease() {
        LockClient a = client();
        LockClient b = client();
        Duration holdAtLeast = Duration.ofMillis(1500);
        long start = System.nanoTime();
        HeldLock held = a.acquire(LockRequest.of("tick").leaseFor(Duration.ofSeconds(10)).holdAtLeast(holdAtLeast));
        held.release();
        assertThat(held.isHeld()).isFalse();

        assertThat(b.tryAcquire(LockRequest.of("tick"))).as("still taken right after the release").isEmpty();
        assertThat(a.tryAcquire(LockRequest.of("tick"))).as("also for its own client").isEmpty();
        b.acquire(LockRequest.of("tick").waitAtMost(Duration.ofSeconds(20)));
        assertThat(Duration.ofNanos(System.nanoTime() - start)).isGreaterThanOrEqualTo(holdAtLeast);
    }

    @Test
    void aClosedClientRefusesWork() {
        LockClient a = newClient();
        a.close();
        assertThatThrownBy(() -> a.acquire(LockRequest.of("x"))).isInstanceOf(IllegalStateException.class)
                .hasMessageContaining("closed");
        assertThatThrownBy(() -> a.get("x")).isInstanceOf(IllegalStateException.class);
    }

    @Test
    void badKeysAreRefusedAtTheCallAndNothingIsLocked() {
        LockClient a = client();
        assertThatThrownBy(() -> a.get(" ")).isInstanceOf(IllegalArgumentException.class).hasMessageContaining("key");
        assertThatThrownBy(() -> a.acquire(null)).isInstanceOf(NullPointerException.class);
        assertThat(a.list()).noneMatch(LockInfo::isHeldByThisClient);
    }

    /**
     * 8 threads on 2 clients, 500 acquisitions each, over 4 keys: a plain (non-atomic) counter per key
     * must come out exact, and no two critical sections on one key may overlap.
     */
    @Test
    void mutualExclusionHoldsUnderContention() throws Exception {
        LockClient[] clients = {client(), client()};
        int threadCount = 8;
        int iterations = 500;
        String[] keys = {"k0", "k1", "k2", "k3"};
        // get and set are two steps, so overlapping holders lose updates; each step is visible across
        // threads, so the count is exact exactly when exclusion held.
        AtomicLongArray counters = new AtomicLongArray(keys.length);
        AtomicInteger[] inside = new AtomicInteger[keys.length];
        for (int i = 0; i < keys.length; i++) {
            inside[i] = new AtomicInteger();
        }
        ConcurrentLinkedQueue<String> overlaps = new ConcurrentLinkedQueue<>();
        CountDownLatch start = new CountDownLatch(1);
        List<Future<?>> workers = new ArrayList<>();
        for (int t = 0; t < threadCount; t++) {
            int thread = t;
            LockClient c = clients[t % 2];
            workers.add(inThread(() -> {
                start.await();
                for (int i = 0; i < iterations; i++) {
                    int k = (i + thread / 2) % keys.length; // threads 2n and 2n+1 sit on different clients
                    try (HeldLock ignored = c.acquire(LockRequest.of(keys[k]).waitAtMost(Duration.ofSeconds(60)))) {
                        if (inside[k].incrementAndGet() != 1) {
                            overlaps.add(keys[k] + " entered by thread " + thread + " while held");
                        }
                        counters.set(k, counters.get(k) + 1);
                        if (inside[k].decrementAndGet() != 0) {
                            overlaps.add(keys[k] + " left by thread " + thread + " while another was inside");
                        }
                    }
                }
                return null;
            }));
        }
        start.countDown();
        for (Future<?> worker : workers) {
            worker.get(5, TimeUnit.MINUTES);
        }
        assertThat(overlaps).isEmpty();
        for (int k = 0; k < keys.length; k++) {
            assertThat(counters.get(k)).as(keys[k]).isEqualTo(1000);
        }
    }
}
