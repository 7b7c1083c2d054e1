package dev.pglock.spring;

import static org.awaitility.Awaitility.await;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockClient;
import dev.pglock.core.LockMode;
import dev.pglock.core.LockRequest;
import java.time.Duration;
import org.junit.jupiter.api.Test;
import reactor.core.Disposable;
import reactor.core.publisher.Mono;

/** The method-shape suite with {@code pglock.mode=advisory}. */
class AdvisoryMethodShapesTest extends MethodShapesIntegrationTest {

    @Override
    protected LockMode mode() {
        return LockMode.ADVISORY;
    }

    /**
     * A subscriber that cancels while its acquisition still waits for the lock must not leave the
     * lock held when the wait ends later (before: the late grant was dropped with nobody to release
     * it). Advisory mode, where the wait is visible in pg_locks; the mechanism is the same in both.
     */
    @Test
    void aSubscriptionCancelledWhileWaitingForTheLockLeavesNothingHeld() throws Exception {
        runner().run(context -> {
            MethodShapesIntegrationTest.AsyncShapes shapes = context.getBean(MethodShapesIntegrationTest.AsyncShapes.class);
            LockClient other = otherReplica();
            HeldLock taken = other.acquire(LockRequest.of("mono-wait"));

            Disposable subscription = shapes.monoWaiting(Mono.never()).subscribe();
            await().atMost(Duration.ofSeconds(10)).until(() -> waitersInDatabase("mono-wait") == 1);
            subscription.dispose();
            taken.release(); // the abandoned wait is granted now, with nobody left to use it

            await().atMost(Duration.ofSeconds(10)).until(() -> other.tryAcquire(LockRequest.of("mono-wait"))
                    .map(HeldLock::release).orElse(false));
        });
    }

}
