package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import java.util.ArrayDeque;
import java.util.Deque;
import java.util.Optional;

/**
 * The lock the running code holds through {@link DistributedLock} or {@link LockTemplate}, for the
 * code inside that needs its fencing token or wants to {@code assertHeld()} before a write:
 *
 * <pre>{@code
 * long token = LockContext.current().fencingToken();
 * }</pre>
 *
 * <p>Per thread; nested locked calls see their own lock, and the outer one again once they return.
 */
public final class LockContext {

    /**
     * The key under which a reactive {@code @DistributedLock} method's publisher finds its lock in the
     * Reactor context: {@code Mono.deferContextual(ctx -> ...ctx.get(LockContext.REACTOR_KEY))}.
     * {@link #current()} works there only while the method assembles its publisher.
     */
    public static final Class<HeldLock> REACTOR_KEY = HeldLock.class;

    private static final ThreadLocal<Deque<HeldLock>> held = ThreadLocal.withInitial(ArrayDeque::new);

    private LockContext() {
    }

    /**
     * The innermost lock held by a locked call on this thread.
     *
     * @throws IllegalStateException outside a {@code @DistributedLock} method or {@code LockTemplate} callback
     */
    public static HeldLock current() {
        HeldLock lock = held.get().peek();
        if (lock == null) {
            throw new IllegalStateException("no pglock lock is held by this thread: LockContext.current() works inside"
                    + " a @DistributedLock method or a LockTemplate callback, on the thread that runs it");
        }
        return lock;
    }

    /** The innermost lock held by a locked call on this thread, if any. */
    public static Optional<HeldLock> find() {
        return Optional.ofNullable(held.get().peek());
    }

    static void push(HeldLock lock) {
        held.get().push(lock);
    }

    static void pop() {
        Deque<HeldLock> stack = held.get();
        stack.pop();
        if (stack.isEmpty()) {
            held.remove();
        }
    }
}
