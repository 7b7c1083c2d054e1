package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
import org.aopalliance.intercept.MethodInterceptor;
import org.aopalliance.intercept.MethodInvocation;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.aop.support.AopUtils;
import org.springframework.beans.factory.ObjectProvider;

/** Turns a call of a {@link DistributedLock} method into a {@link LockRequest} and runs it through {@link LockTemplate}. */
final class DistributedLockInterceptor implements MethodInterceptor {

    private static final Logger log = LoggerFactory.getLogger(DistributedLockInterceptor.class);

    private final LockOperationSource source;
    private final LockKeyEvaluator evaluator;
    private final ObjectProvider<LockTemplate> templates;
    private volatile LockTemplate template;

    DistributedLockInterceptor(LockOperationSource source, LockKeyEvaluator evaluator,
            ObjectProvider<LockTemplate> templates) {
        this.source = source;
        this.evaluator = evaluator;
        this.templates = templates;
    }

    /** Set once the application's beans exist. */
    void use(LockTemplate template) {
        this.template = template;
    }

    private LockTemplate template() {
        LockTemplate known = template;
        if (known == null) { // a call before start-up finished
            known = templates.getObject();
            template = known;
        }
        return known;
    }

    @Override
    public Object invoke(MethodInvocation invocation) throws Throwable {
        Object target = invocation.getThis();
        Class<?> targetClass = target == null ? null : AopUtils.getTargetClass(target);
        LockOperation operation = source.get(invocation.getMethod(), targetClass);
        if (operation == null) {
            return invocation.proceed();
        }
        LockTemplate template = template();
        if (operation.mode() != null) {
            template = template.inMode(operation.mode());
        }
        LockRequest request = operation.request(template, key(operation, invocation, target, targetClass));
        HeldLock lock;
        try {
            lock = template.tryLock(request);
        } catch (IllegalStateException e) {
            // Shutting down: the client grants nothing more. A method that skips when the lock is
            // taken (a @Scheduled job firing during shutdown) skips quietly here too.
            if (template.client().isClosed() && operation.skipsWhenLocked()) {
                log.debug("{} skipped: the lock client is closed (the application is shutting down)",
                        operation.description());
                return operation.skippedResult();
            }
            throw e;
        }
        if (lock == null) {
            if (operation.skipsWhenLocked()) {
                log.debug("{} skipped: lock '{}' is held elsewhere", operation.description(), request.key());
                return operation.skippedResult();
            }
            throw new LockNotAcquiredException(request.key(), request.waitAtMost(), operation.description()
                    + ": lock '" + request.key() + "' is held elsewhere; gave up after waiting " + request.waitAtMost(),
                    null);
        }
        return template.runHolding(lock, invocation::proceed);
    }

    private String key(LockOperation operation, MethodInvocation invocation, Object target, Class<?> targetClass) {
        if (operation.fixedKey() != null) {
            return operation.fixedKey();
        }
        Object value = evaluator.evaluate(operation.keyExpression(), operation.method(),
                targetClass != null ? targetClass : operation.method().getDeclaringClass(), target,
                invocation.getArguments());
        if (value == null || value.toString().isBlank()) {
            throw new IllegalArgumentException(operation.description() + ": key expression '"
                    + operation.keyExpression() + "' evaluated to " + (value == null ? "null" : "'" + value + "'")
                    + ". If it names a parameter, compile with -parameters (Spring Boot's build plugins do) or use"
                    + " #p0 / #a0");
        }
        return value.toString();
    }
}
