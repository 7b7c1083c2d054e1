package dev.pglock.spring;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import org.springframework.core.annotation.AliasFor;

/**
 * Runs the method while holding a distributed lock kept in PostgreSQL, for exactly as long as the
 * method's work runs:
 *
 * <ul>
 *   <li>a plain method: acquired before it starts (and before its {@code @Transactional} transaction
 *       begins), released after it returns or throws (after that transaction ends). Inside a
 *       transaction the method did not start (a {@code @Transactional} caller), the release waits for
 *       that transaction to complete, so the next holder sees its commit;
 *   <li>a method returning {@code CompletionStage}/{@code CompletableFuture}: held until the future
 *       completes;
 *   <li>a method returning a Reactor {@code Mono}/{@code Flux} (or any type Spring's
 *       {@code ReactiveAdapterRegistry} adapts): acquired on subscription, off the subscribing thread,
 *       and held until the publisher terminates or is cancelled.
 * </ul>
 *
 * <pre>{@code
 * @Scheduled(cron = "0 * * * * *")
 * @DistributedLock(holdAtLeast = "30s")                    // one replica per tick; the others skip
 * public void run() { ... }
 *
 * @Transactional
 * @DistributedLock(key = "'invoice:' + #invoiceId", waitAtMost = "5s", inTransaction = true)
 * public Receipt pay(long invoiceId) { ... }
 * }</pre>
 *
 * <p>The exception, if any, passes through unchanged. Works on public methods of Spring beans,
 * through the bean's proxy: a call from the same object ({@code this.run()}) is not intercepted, and
 * a private or final method cannot be (both are warned about at start-up). Use {@link LockTemplate}
 * there. Usable as a meta-annotation.
 */
@Target({ElementType.METHOD, ElementType.ANNOTATION_TYPE})
@Retention(RetentionPolicy.RUNTIME)
@Documented
public @interface DistributedLock {

    /** Alias for {@link #key()}. */
    @AliasFor("key")
    String value() default "";

    /**
     * A SpEL expression for the lock key, evaluated on each call: {@code #name} or {@code #p0} for
     * arguments, {@code #root.methodName}, {@code #root.targetClass}, {@code @bean} for beans,
     * {@code ${...}} for properties. A literal needs quotes: {@code "'nightly-report'"}. A {@code #name}
     * that is not a parameter stops the start. The value must identify the lock: a string, number,
     * UUID, enum, or a type that overrides {@code toString} (a record); an array, a collection, a map or
     * an object with {@code Object}'s {@code toString} (also behind a proxy) is refused at the call, as is
     * an expression that fails, naming the method and the expression.
     *
     * <p>Default: the target class's fully qualified name, a dot, the method name and its parameter
     * types' fully qualified names, e.g. {@code "com.example.Jobs.report()"} or
     * {@code "com.example.Accounts.touch(long,java.lang.String)"}:
     * distinct across packages and overloads, and the same on every replica (never a proxy's name: for
     * a bean that is a JDK dynamic proxy or a lambda, the interface that declares the method stands for
     * its class).
     */
    @AliasFor("value")
    String key() default "";

    /** How long to wait for the lock, e.g. {@code "5s"}, {@code "PT5S"}, {@code "${jobs.wait}"}. Default: {@code pglock.wait}. */
    String waitAtMost() default "";

    /** The lease in lease mode. Default: {@code pglock.lease}. Ignored in advisory mode. */
    String leaseFor() default "";

    /** The shortest time the lock stays taken after acquisition, even when the method returns sooner. Default: {@code pglock.hold-at-least}. */
    String holdAtLeast() default "";

    /** Whether to take a shared (read) lock instead of an exclusive one. */
    boolean shared() default false;

    /**
     * Instead of the key's lock, one of this many permits of the key's semaphore: at most
     * {@code permits} calls run at once across every replica (see {@code LockClient.tryAcquirePermit};
     * every user of the key must give the same number). 0, the default, takes the lock. Cannot be
     * combined with {@link #shared()} or {@link #inTransaction()}.
     */
    int permits() default 0;

    /** Which lock mode; {@link Mode#DEFAULT} uses {@code pglock.mode}. */
    Mode mode() default Mode.DEFAULT;

    /** What to do when the lock could not be had within the wait. */
    WhenLocked whenLocked() default WhenLocked.DEFAULT;

    /**
     * Ties the lock to the method's transaction instead of wrapping it, for a {@code @Transactional}
     * method whose data lives in pglock's own database: the strongest guarantee, since work done
     * after the lock was lost can never commit. Advisory mode takes {@code pg_advisory_xact_lock} on
     * the transaction's own connection (commit or rollback releases it; a dead session cannot commit);
     * lease mode confirms and extends the lease inside the transaction just before it commits (a lease
     * that is gone rolls the transaction back with {@link dev.pglock.core.LockLostException}). The call
     * fails with {@link IllegalStateException} when no transaction on pglock's DataSource is running.
     */
    boolean inTransaction() default false;

    /** Which of pglock's two lock modes a method uses. */
    enum Mode {
        /** The application's {@code pglock.mode}. */
        DEFAULT,
        /** Session-level advisory locks. */
        ADVISORY,
        /** The lease table. */
        LEASE
    }

    /** The outcome for a caller when someone else holds the lock. */
    enum WhenLocked {
        /**
         * A {@code @Scheduled} method (any return type) is skipped quietly: a debug log, the normal
         * case for a tick on the other replicas. Any other method throws
         * {@link dev.pglock.core.LockNotAcquiredException}.
         */
        DEFAULT,
        /**
         * Skip the method: it returns {@code null}, {@code Optional.empty()} for an {@code Optional}, a
         * future completed with {@code null} for a {@code CompletionStage}, an empty publisher for a
         * reactive type.
         */
        SKIP,
        /**
         * Throw {@link dev.pglock.core.LockNotAcquiredException}: from the call, or as the failure of the
         * returned future or publisher.
         */
        THROW
    }
}
