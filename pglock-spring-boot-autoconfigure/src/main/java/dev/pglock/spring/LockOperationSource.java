package dev.pglock.spring;

import dev.pglock.core.LockMode;
import dev.pglock.core.LockRequest;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.util.Collection;
import java.util.LinkedHashSet;
import java.util.Set;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.util.ClassUtils;
import org.springframework.util.ReflectionUtils;
import java.time.Duration;
import java.util.Map;
import java.util.Optional;
import java.util.concurrent.ConcurrentHashMap;
import org.springframework.aop.support.AopUtils;
import org.springframework.beans.factory.BeanFactory;
import org.springframework.beans.factory.config.ConfigurableBeanFactory;
import org.springframework.boot.convert.DurationStyle;
import org.springframework.core.MethodClassKey;
import org.springframework.core.annotation.AnnotatedElementUtils;
import org.springframework.expression.ParseException;

/**
 * Finds {@link DistributedLock} on a method (the most specific one of the target class, through
 * interfaces and meta-annotations) and resolves it into a {@link LockOperation}, once per method and
 * target class. Called while proxies are created, so a bad annotation fails the application's start.
 */
final class LockOperationSource {

    private static final Optional<LockOperation> NONE = Optional.empty();

    private static final Logger log = LoggerFactory.getLogger(LockOperationSource.class);

    private final Map<MethodClassKey, Optional<LockOperation>> cache = new ConcurrentHashMap<>();
    private final Map<Class<?>, Boolean> classes = new ConcurrentHashMap<>();
    private final BeanFactory beanFactory;
    private final LockKeyEvaluator evaluator;
    private final LockDefaults defaults;

    LockOperationSource(BeanFactory beanFactory, LockKeyEvaluator evaluator, LockDefaults defaults) {
        this.beanFactory = beanFactory;
        this.evaluator = evaluator;
        this.defaults = defaults;
    }

    /**
     * Whether any method of the class carries the annotation, resolving (and so checking) every one
     * of them now: proxy creation stops at the first matching method, and a bad second one must not
     * wait for its first call to fail.
     */
    boolean hasLockedMethods(Class<?> targetClass) {
        return classes.computeIfAbsent(targetClass, this::scan);
    }

    private boolean scan(Class<?> targetClass) {
        boolean[] found = {false};
        Set<Class<?>> types = new LinkedHashSet<>(ClassUtils.getAllInterfacesForClassAsSet(targetClass));
        types.add(targetClass);
        for (Class<?> type : types) {
            ReflectionUtils.doWithMethods(type, method -> {
                if (AnnotatedElementUtils.hasAnnotation(method, DistributedLock.class)) {
                    if (Modifier.isPrivate(method.getModifiers()) || Modifier.isFinal(method.getModifiers())
                            || Modifier.isStatic(method.getModifiers())) {
                        log.warn("@DistributedLock on {}.{}(..) has no effect: a private, final or static method"
                                + " cannot be intercepted; make it public and non-final, or use LockTemplate",
                                targetClass.getSimpleName(), method.getName());
                        return;
                    }
                    found[0] |= get(method, targetClass) != null;
                }
            }, ReflectionUtils.USER_DECLARED_METHODS);
        }
        return found[0];
    }

    /** Every operation resolved so far. */
    Collection<LockOperation> operations() {
        return cache.values().stream().flatMap(Optional::stream).toList();
    }

    /** The operation for the method, or null when it is not annotated. */
    LockOperation get(Method method, Class<?> targetClass) {
        return cache.computeIfAbsent(new MethodClassKey(method, targetClass), k -> resolve(method, targetClass))
                .orElse(null);
    }

    private Optional<LockOperation> resolve(Method method, Class<?> targetClass) {
        if (method.getDeclaringClass() == Object.class) {
            return NONE;
        }
        Method specific = targetClass == null ? method : AopUtils.getMostSpecificMethod(method, targetClass);
        DistributedLock annotation = AnnotatedElementUtils.findMergedAnnotation(specific, DistributedLock.class);
        if (annotation == null && specific != method) {
            annotation = AnnotatedElementUtils.findMergedAnnotation(method, DistributedLock.class);
        }
        if (annotation == null) {
            return NONE;
        }
        Class<?> owner = targetClass != null ? targetClass : method.getDeclaringClass();
        String description = "@DistributedLock on " + owner.getSimpleName() + "." + method.getName() + "(..)";
        String keyText = resolvePlaceholders(annotation.key());
        String keyExpression = null;
        String fixedKey = null;
        if (keyText.isBlank()) {
            fixedKey = owner.getSimpleName() + "." + method.getName();
        } else {
            keyExpression = keyText;
            try {
                evaluator.parse(keyExpression, specific, owner);
            } catch (ParseException e) {
                throw new IllegalStateException(description + ": key expression '" + keyExpression
                        + "' does not parse: " + e.getMessage() + ". A literal key needs quotes: \"'my-key'\"", e);
            }
        }
        LockOperation operation = new LockOperation(specific, description, keyExpression, fixedKey,
                duration(description, "waitAtMost", annotation.waitAtMost()),
                duration(description, "leaseFor", annotation.leaseFor()),
                duration(description, "holdAtLeast", annotation.holdAtLeast()), annotation.shared(),
                switch (annotation.mode()) {
                    case DEFAULT -> null;
                    case ADVISORY -> LockMode.ADVISORY;
                    case LEASE -> LockMode.LEASE;
                }, annotation.whenLocked());
        check(operation);
        return Optional.of(operation);
    }

    /** Refuses at start-up what could only fail at every call. */
    private void check(LockOperation operation) {
        Class<?> returnType = operation.method().getReturnType();
        if (operation.whenLocked() == DistributedLock.WhenLocked.SKIP && returnType.isPrimitive()
                && returnType != void.class) {
            throw new IllegalStateException(operation.description() + ": whenLocked = SKIP cannot skip a method that"
                    + " returns " + returnType + " (there is no value to return); return a wrapper type or"
                    + " Optional, or use THROW");
        }
        if (defaults == null) {
            return;
        }
        Duration hold = operation.holdAtLeast() != null ? operation.holdAtLeast() : defaults.holdAtLeast();
        LockMode mode = operation.mode() != null ? operation.mode() : defaults.mode();
        try {
            if (operation.leaseFor() != null) {
                LockRequest.of("check").leaseFor(operation.leaseFor()).holdAtLeast(hold);
            }
            if (mode == LockMode.LEASE) {
                Duration lease = operation.leaseFor() != null ? operation.leaseFor() : defaults.lease();
                if (lease.compareTo(defaults.heartbeatInterval().multipliedBy(2)) <= 0) {
                    throw new IllegalArgumentException("the lease (" + lease + ") must be longer than twice"
                            + " pglock.heartbeat-interval (" + defaults.heartbeatInterval() + ")");
                }
                if (hold.compareTo(lease) > 0) {
                    throw new IllegalArgumentException("holdAtLeast (" + hold + ") must not be longer than the lease ("
                            + lease + ")");
                }
            }
        } catch (IllegalArgumentException e) {
            throw new IllegalStateException(operation.description() + ": " + e.getMessage(), e);
        }
    }

    private Duration duration(String description, String attribute, String text) {
        String resolved = resolvePlaceholders(text);
        if (resolved.isBlank()) {
            return null;
        }
        Duration value;
        try {
            value = DurationStyle.detectAndParse(resolved.trim());
        } catch (IllegalArgumentException e) {
            throw new IllegalStateException(description + ": " + attribute + " = \"" + text + "\" is not a duration"
                    + (resolved.equals(text) ? "" : " (resolved to \"" + resolved + "\")")
                    + "; use e.g. \"5s\", \"500ms\" or \"PT5S\"", e);
        }
        if (value.isNegative()) {
            throw new IllegalStateException(description + ": " + attribute + " = \"" + text + "\" must not be negative");
        }
        return value;
    }

    private String resolvePlaceholders(String text) {
        if (text.indexOf("${") >= 0 && beanFactory instanceof ConfigurableBeanFactory configurable) {
            return configurable.resolveEmbeddedValue(text);
        }
        return text;
    }
}
