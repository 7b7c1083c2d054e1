package dev.pglock.spring;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import org.springframework.core.annotation.AliasFor;

/**
 * Runs the method while holding a distributed lock kept in PostgreSQL: acquired before the method
 * starts (and before a {@code @Transactional} transaction begins), released after it returns or
 * throws (after the transaction ends). The exception, if any, passes through unchanged.
 *
 * <pre>{@code
 * @Scheduled(cron = "0 * * * * *")
 * @DistributedLock(holdAtLeast = "30s")                    // key: "ReportJob.run"
 * public void run() { ... }
 *
 * @Transactional
 * @DistributedLock(key = "'invoice:' + #invoiceId", waitAtMost = "5s")
 * public Receipt pay(long invoiceId) { ... }
 * }</pre>
 *
 * <p>Works on public methods of Spring beans, through the bean's proxy: a call from the same object
 * ({@code this.run()}) is not intercepted, and a final method cannot be. Use {@link LockTemplate}
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
     * {@code ${...}} for properties. A literal needs quotes: {@code "'nightly-report'"}. Default:
     * the target class's simple name, a dot, and the method name.
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

    /** Which lock mode; {@link Mode#DEFAULT} uses {@code pglock.mode}. */
    Mode mode() default Mode.DEFAULT;

    /** What to do when the lock could not be had within the wait. */
    WhenLocked whenLocked() default WhenLocked.DEFAULT;

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
         * A {@code void} method is skipped quietly (a debug log: the normal case for a
         * {@code @Scheduled} tick on the other replicas); any other method throws.
         */
        DEFAULT,
        /** Skip the method: it returns {@code null}, or {@code Optional.empty()} for an {@code Optional}. */
        SKIP,
        /** Throw {@link dev.pglock.core.LockNotAcquiredException}. */
        THROW
    }
}
