package dev.pglock.spring;

import dev.pglock.core.HeldLock;
import dev.pglock.core.LockNotAcquiredException;
import dev.pglock.core.LockRequest;
import java.util.Collection;
import java.util.EnumMap;
import java.util.EnumSet;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.SortedMap;
import java.util.SortedSet;
import java.util.UUID;
import java.util.concurrent.CompletableFuture;
import org.aopalliance.intercept.MethodInterceptor;
import org.aopalliance.intercept.MethodInvocation;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import org.springframework.aop.ProxyMethodInvocation;
import org.springframework.aop.framework.AopProxyUtils;
import org.springframework.aop.support.AopUtils;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.util.ClassUtils;
import org.springframework.util.ReflectionUtils;

/**
 * Turns a call of a {@link DistributedLock} method into a {@link LockRequest} and holds the lock for
 * as long as the method's work runs, through {@link LockTemplate}. Two of them apply to each locked
 * method: the outer one, just outside {@code @Transactional}, takes ordinary locks; the inner one,
 * inside the transaction, takes locks that join it ({@code inTransaction = true}) and has every other
 * lock checked before the transaction commits.
 */
final class DistributedLockInterceptor implements MethodInterceptor {

    private static final Logger log = LoggerFactory.getLogger(DistributedLockInterceptor.class);
    /** Per class: whether its {@code toString} identifies a value (not Object's identity string). */
    private static final ClassValue<Boolean> STABLE_TO_STRING = new ClassValue<>() {
        @Override
        protected Boolean computeValue(Class<?> type) {
            return ReflectionUtils.findMethod(type, "toString").getDeclaringClass() != Object.class;
        }
    };

    private final LockOperationSource source;
    private final LockKeyEvaluator evaluator;
    private final ObjectProvider<LockTemplate> templates;
    private final boolean inner;
    private final ObjectProvider<LockSkipListener> skipListeners;
    private volatile LockTemplate template;

    DistributedLockInterceptor(LockOperationSource source, LockKeyEvaluator evaluator,
            ObjectProvider<LockTemplate> templates, boolean inner, ObjectProvider<LockSkipListener> skipListeners) {
        this.source = source;
        this.evaluator = evaluator;
        this.templates = templates;
        this.inner = inner;
        this.skipListeners = skipListeners;
    }

    /** Tells every {@link LockSkipListener} bean that the method did not run. */
    void skipped(LockOperation operation, String key) {
        if (skipListeners == null) {
            return;
        }
        skipListeners.orderedStream().forEach(listener -> {
            try {
                listener.skipped(operation.method(), key);
            } catch (RuntimeException e) {
                log.warn("a LockSkipListener threw; ignored", e);
            }
        });
    }

    /** Set once the application's beans exist. */
    void use(LockTemplate template) {
        this.template = template;
    }

    private LockTemplate template(LockOperation operation) {
        LockTemplate known = template;
        if (known == null) { // a call before start-up finished
            known = templates.getObject();
            template = known;
        }
        LockTemplate inMode = operation.mode() != null ? known.inMode(operation.mode()) : known;
        return operation.permits() > 0 ? inMode.withPermits(operation.permits()) : inMode;
    }

    @Override
    public Object invoke(MethodInvocation invocation) throws Throwable {
        Object target = invocation.getThis();
        Class<?> targetClass = target == null ? null : AopUtils.getTargetClass(target);
        LockOperation operation = source.get(invocation.getMethod(), targetClass);
        if (operation == null) {
            return invocation.proceed();
        }
        if (inner) {
            return invokeInside(operation, invocation, target, targetClass);
        }
        if (operation.inTransaction()) {
            return invocation.proceed(); // the inner interceptor takes it, once the transaction has begun
        }
        LockTemplate template = template(operation);
        LockRequest request = request(operation, template, invocation, target, targetClass);
        return switch (operation.shape()) {
            case SYNCHRONOUS -> invokeSynchronous(operation, template, request, invocation);
            case COMPLETION_STAGE -> invokeCompletionStage(operation, template, request, invocation);
            case REACTIVE -> ReactiveLocking.invoke(operation, template, request, cloneable(invocation),
                    () -> notAcquired(operation, template, request), () -> skipped(operation, request.key()));
        };
    }

    /**
     * Inside the transaction: a lock that joins it is taken here; any other lock the outer
     * interceptor took for this call is checked before the commit, so a lock lost meanwhile rolls the
     * transaction back.
     */
    private Object invokeInside(LockOperation operation, MethodInvocation invocation, Object target,
            Class<?> targetClass) throws Throwable {
        if (operation.inTransaction()) {
            LockTemplate template = template(operation).inTransaction();
            LockRequest request = request(operation, template, invocation, target, targetClass);
            return invokeSynchronous(operation, template, request, invocation);
        }
        // A method that returns a future commits as it returns too: its lock is checked as well. A
        // publisher's lock is taken on subscription, after this call, and its reactive transaction
        // has no thread-bound synchronization.
        if (operation.shape() != LockOperation.Shape.REACTIVE && LockSynchronization.active()) {
            java.util.Optional<HeldLock> lock = LockContext.find();
            lock.ifPresent(LockSynchronization::checkBeforeCommit);
            Object result = invocation.proceed();
            if (result instanceof java.util.concurrent.CompletionStage<?> stage && lock.isPresent()) {
                // Its work runs on: should the commit fail, the outer interceptor keeps the lock for it.
                LockTemplate.returnedInside(lock.get(), stage);
            }
            return result;
        }
        return invocation.proceed();
    }

    private Object invokeSynchronous(LockOperation operation, LockTemplate template, LockRequest request,
            MethodInvocation invocation) throws Throwable {
        HeldLock lock = acquire(operation, template, request);
        if (lock == null) {
            return skipOrThrow(operation, template, request);
        }
        return template.runHolding(lock, invocation::proceed);
    }

    /** Held until the returned stage completes; the caller's stage completes after the release. */
    private Object invokeCompletionStage(LockOperation operation, LockTemplate template, LockRequest request,
            MethodInvocation invocation) throws Throwable {
        if (!request.waitAtMost().isZero() && AsyncSupport.inNonBlockingThread()) {
            throw new IllegalStateException(operation.description() + " was called on a non-blocking thread ('"
                    + Thread.currentThread().getName() + "') with waitAtMost " + request.waitAtMost()
                    + ": waiting for the lock there would block it. Return a Mono (acquired off-thread on"
                    + " subscription), or call it from another thread (waitAtMost = \"0s\" is let through, but"
                    + " its try is still one blocking round trip to the database on this thread)");
        }
        boolean futureType = operation.method().getReturnType().isAssignableFrom(CompletableFuture.class);
        HeldLock lock;
        try {
            lock = acquire(operation, template, request);
        } catch (RuntimeException e) {
            if (futureType && !(e instanceof IllegalArgumentException)) {
                return CompletableFuture.failedFuture(e);
            }
            throw e;
        }
        if (lock == null) {
            return futureType && !operation.skipsWhenLocked()
                    ? CompletableFuture.failedFuture(notAcquired(operation, template, request))
                    : skipOrThrow(operation, template, request);
        }
        // The caller's future completes once the lock is released where its type allows (see
        // LockTemplate.releasedWhenComplete); a stage of a type of its own goes back as it came.
        try {
            return template.runHolding(lock, invocation::proceed, stage -> futureType);
        } catch (dev.pglock.core.LockLostException lost) {
            // Found lost before the method's transaction committed (see invokeInside): told the way
            // its future tells every other failure to get or keep the lock.
            if (futureType) {
                return CompletableFuture.failedFuture(lost);
            }
            throw lost;
        }
    }

    /** The lock, or null when it is held elsewhere; during shutdown a skipping method gets null too. */
    private HeldLock acquire(LockOperation operation, LockTemplate template, LockRequest request) {
        try {
            return template.tryLock(request);
        } catch (IllegalStateException e) {
            // Shutting down: the client grants nothing more. A method that skips when the lock is
            // taken (a @Scheduled job firing during shutdown) skips quietly here too.
            if (template.client().isClosed() && operation.skipsWhenLocked()) {
                log.debug("{} skipped: the lock client is closed (the application is shutting down)",
                        operation.description());
                return null; // the caller skips, and tells the skip listeners, in skipOrThrow
            }
            throw e;
        }
    }

    private Object skipOrThrow(LockOperation operation, LockTemplate template, LockRequest request) {
        if (operation.skipsWhenLocked()) {
            log.debug("{} skipped: lock '{}' is held elsewhere", operation.description(), request.key());
            skipped(operation, request.key());
            return operation.skippedResult();
        }
        throw notAcquired(operation, template, request);
    }

    private static LockNotAcquiredException notAcquired(LockOperation operation, LockTemplate template,
            LockRequest request) {
        return template.notAcquired(request, operation.description() + ": ");
    }

    /** An invocation that each subscription can proceed with once (a resubscribed publisher calls again). */
    private static ReactiveLocking.Call cloneable(MethodInvocation invocation) {
        if (invocation instanceof ProxyMethodInvocation proxied) {
            return () -> proxied.invocableClone().proceed();
        }
        return invocation::proceed;
    }

    private String key(LockOperation operation, MethodInvocation invocation, Object target, Class<?> targetClass) {
        if (operation.fixedKey() != null) {
            return operation.fixedKey();
        }
        Object value;
        try {
            // #root.targetClass: a generated class (a JDK proxy's, a lambda's) is named per JVM; the
            // interface that declares the method stands for it, as in default keys.
            value = evaluator.evaluate(operation.keyExpression(), operation.method(),
                    targetClass != null && !LockOperationSource.isGenerated(targetClass) ? targetClass
                            : operation.method().getDeclaringClass(), target, invocation.getArguments());
        } catch (org.springframework.expression.EvaluationException e) {
            // A part refused inside a method call reaches here wrapped in SpEL's own error: said as it was.
            String why = e.getMessage();
            for (Throwable cause = e; cause != null; cause = cause.getCause()) {
                if (cause instanceof LockKeyEvaluator.KeyPartRefused refused) {
                    why = refused.getMessage();
                    break;
                }
            }
            throw new IllegalArgumentException(operation.description() + ": key expression '"
                    + operation.keyExpression() + "' failed: " + why, e);
        }
        String string = value == null ? null : value.toString();
        if (string == null || string.isBlank()) {
            throw new IllegalArgumentException(operation.description() + ": key expression '"
                    + operation.keyExpression() + "' evaluated to " + (value == null ? "null" : "'" + value + "'")
                    + ". If it names a parameter, compile with -parameters (Spring Boot's build plugins do) or use"
                    + " #p0 / #a0");
        }
        if (!identifiesALock(value, string)) {
            throw new IllegalArgumentException(operation.description() + ": key expression '"
                    + operation.keyExpression() + "' evaluated to a " + value.getClass().getName()
                    + ", whose string form does not identify a lock (" + whyNotALock(value) + ")." + USE_INSTEAD);
        }
        return string;
    }

    static final String USE_INSTEAD = " Use a string, number, UUID, enum, or a value with its own toString,"
            + " e.g. '#order.id'";

    /**
     * Whether a part of a key built from {@code value} (SpEL's + turned it into {@code string}) stably
     * identifies it: as a whole key value, but an array, a collection or a map is judged by the
     * string of its joined elements, which is stable unless one of them has Object's toString.
     */
    static boolean identifiesAPart(Object value, String string) {
        return isContainer(value) ? !unordered(value) && !containsIdentity(string, value.getClass())
                : identifiesALock(value, string);
    }

    static String whyNotAPart(Object value) {
        return unordered(value) ? "a set or map of two or more elements without an order of its own (a HashSet,"
                + " a HashMap, Set.of, Map.of): its elements join in an order that depends on how it was filled"
                + " and, for some, on the JVM, so the same elements can make another key on another replica; join"
                + " a sorted copy, e.g. #ids.stream().sorted().toList() (a map: new java.util.TreeMap(#map)), or"
                + " an ordered set (TreeSet, LinkedHashSet, EnumSet)"
                : isContainer(value) ? "an element with Object's identity toString, different for every instance"
                        : whyNotALock(value);
    }

    /**
     * A set or map of two or more elements without an order of its own. Set.of's and Map.of's order
     * comes from a seed drawn per JVM, a hash set's or map's of enums from identity hashes, and any hash
     * set's or map's from how it was filled: elements in one bucket (1 and 17 in a table of 16) iterate
     * in the order they were added, so a batch that arrived as [17, 1] on one replica and [1, 17] on
     * another joins two ways. Sorted, insertion-ordered and enum sets and maps, and Java 21's
     * sequenced ones, carry their order, as lists do.
     */
    private static boolean unordered(Object value) {
        int size;
        if (value instanceof Set<?> set) {
            size = set.size();
        } else if (value instanceof Map<?, ?> map) {
            size = map.size();
        } else {
            return false;
        }
        return size >= 2 && ORDERED.stream().noneMatch(type -> type.isInstance(value));
    }

    /**
     * Sets and maps that iterate the same way on every JVM: sorted, insertion-ordered and enum ones,
     * and, where present, Java 21's sequenced ones (pglock runs on Java 17 too) and Guava's immutable ones.
     */
    private static final List<Class<?>> ORDERED = orderedTypes();

    private static List<Class<?>> orderedTypes() {
        List<Class<?>> types = new java.util.ArrayList<>(List.of(SortedSet.class, SortedMap.class, LinkedHashSet.class,
                LinkedHashMap.class, EnumSet.class, EnumMap.class));
        ClassLoader loader = DistributedLockInterceptor.class.getClassLoader();
        for (String name : List.of("java.util.SequencedCollection", "java.util.SequencedMap",
                "com.google.common.collect.ImmutableCollection", "com.google.common.collect.ImmutableMap")) {
            if (ClassUtils.isPresent(name, loader)) {
                types.add(ClassUtils.resolveClassName(name, loader));
            }
        }
        return List.copyOf(types);
    }

    private static boolean isContainer(Object value) {
        return value.getClass().isArray() || value instanceof Collection<?> || value instanceof Map<?, ?>;
    }

    /** Why {@code value}'s string form does not identify a lock (see {@link #identifiesALock}). */
    static String whyNotALock(Object value) {
        return zoned(value) ? "a java.util.Date or Calendar, which writes itself in this JVM's default time zone:"
                + " the same instant makes another key on a replica set to another zone; use an Instant, e.g."
                + " #day.toInstant(), or a LocalDate"
                : value.getClass().isArray() ? "an array"
                : value instanceof Collection<?> || value instanceof Map<?, ?> ? "a collection or map"
                        : "Object's identity toString, different for every instance";
    }

    /**
     * The call's request. Its durations were checked at start-up, so a refusal here is of the key's
     * own rules (length, characters): said with the method and the expression.
     */
    private LockRequest request(LockOperation operation, LockTemplate template, MethodInvocation invocation,
            Object target, Class<?> targetClass) {
        String key = key(operation, invocation, target, targetClass);
        try {
            return operation.request(template, key);
        } catch (IllegalArgumentException e) {
            throw new IllegalArgumentException(operation.description() + ": key expression '"
                    + operation.keyExpression() + "' evaluated to a key pglock cannot take: " + e.getMessage(), e);
        }
    }

    /** A value whose toString uses the JVM's default time zone (java.sql's dates and times are Dates). */
    private static boolean zoned(Object value) {
        return value instanceof java.util.Date || value instanceof java.util.Calendar;
    }

    /** Whether a key value's string form ({@code string}) stably identifies a lock. */
    static boolean identifiesALock(Object value, String string) {
        if (value instanceof CharSequence || value instanceof Number || value instanceof Boolean
                || value instanceof Character || value instanceof UUID || value instanceof Enum<?>) {
            return true;
        }
        if (isContainer(value) || zoned(value)) {
            return false;
        }
        Class<?> type = value.getClass();
        // A proxy (Spring AOP, a JDK proxy, a lazy JPA reference) declares toString but may forward it
        // to a target with Object's: judged by its target class where Spring knows it, and by its string.
        // A value with its own toString can still write a part with Object's (a record of an entity).
        return STABLE_TO_STRING.get(AopProxyUtils.ultimateTargetClass(value)) && !looksLikeIdentity(string, type)
                && !containsIdentity(string, type);
    }

    /** "package.Class@hash" naming a class that exists, somewhere in a value's string form. */
    private static final java.util.regex.Pattern IDENTITY_PART = java.util.regex.Pattern.compile(
            "([A-Za-z_$][\\w$]*(?:\\.[A-Za-z_$][\\w$]*)+)@[0-9a-f]{1,8}(?![\\w$])");

    /**
     * An array's or a hidden class's (a lambda's) identity form: "[J@1b2c3d4", "[Ljava.lang.String;@…",
     * "com.example.Jobs$$Lambda/0x000001f2c3004a00@…": no class name to look up, and never stable. Only
     * with an identity hash of five hex digits or more and a hidden class's address of nine or more (a
     * lambda loaded from a CDS or AOT cache has an unpadded one from 0x800000000), so that text such as
     * "[I@1]" in a user's data is not taken for one; a hash below 0x10000, one in 30,000, slips through.
     */
    private static final java.util.regex.Pattern UNNAMED_IDENTITY_PART = java.util.regex.Pattern.compile(
            "(?:\\[+(?:[ZBCSIJFD]|L[\\w$.]+;)|[A-Za-z_$][\\w$.]*/0x[0-9a-f]{9,16})@[0-9a-f]{5,8}(?![\\w$])");

    private static boolean containsIdentity(String string, Class<?> type) {
        if (string.indexOf('@') < 0) {
            return false;
        }
        if (UNNAMED_IDENTITY_PART.matcher(string).find()) {
            return true;
        }
        java.util.regex.Matcher part = IDENTITY_PART.matcher(string);
        while (part.find()) {
            if (ClassUtils.isPresent(part.group(1), type.getClassLoader())) {
                return true;
            }
        }
        return false;
    }

    /**
     * Whether {@code string} is Object's identity form, "class name@hash" naming a class that
     * exists, as a proxy that forwards toString to a plain target answers.
     */
    private static boolean looksLikeIdentity(String string, Class<?> type) {
        int at = string.lastIndexOf('@');
        if (at <= 0 || at == string.length() - 1 || string.length() - at > 9) {
            return false;
        }
        for (int i = at + 1; i < string.length(); i++) {
            if (Character.digit(string.charAt(i), 16) < 0 || Character.isUpperCase(string.charAt(i))) {
                return false;
            }
        }
        String name = string.substring(0, at);
        return ClassUtils.isPresent(name, type.getClassLoader());
    }
}
