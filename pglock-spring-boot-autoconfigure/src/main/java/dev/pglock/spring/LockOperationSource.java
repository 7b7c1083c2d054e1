package dev.pglock.spring;

import dev.pglock.core.LockMode;
import dev.pglock.core.LockRequest;
import java.lang.reflect.Method;
import java.lang.reflect.Modifier;
import java.lang.reflect.Proxy;
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
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.concurrent.CompletionStage;
import java.util.concurrent.Future;
import java.util.stream.Collectors;
import org.springframework.core.DefaultParameterNameDiscoverer;
import org.springframework.core.KotlinDetector;
import org.springframework.core.ParameterNameDiscoverer;
import org.springframework.expression.Expression;
import org.springframework.expression.spel.SpelNode;
import org.springframework.expression.spel.ast.VariableReference;
import org.springframework.expression.spel.standard.SpelExpression;
import org.springframework.scheduling.annotation.Scheduled;
import org.springframework.scheduling.annotation.Schedules;
import org.springframework.util.DigestUtils;

/**
 * Finds {@link DistributedLock} on a method (the most specific one of the target class, through
 * interfaces and meta-annotations) and resolves it into a {@link LockOperation}, once per method and
 * target class. Called while proxies are created, so a bad annotation fails the application's start.
 */
final class LockOperationSource {

    private static final Optional<LockOperation> NONE = Optional.empty();

    private static final Logger log = LoggerFactory.getLogger(LockOperationSource.class);
    private static final ParameterNameDiscoverer PARAMETER_NAMES = new DefaultParameterNameDiscoverer();

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
        List<Method> lockedMethods = new ArrayList<>();
        Set<Class<?>> types = new LinkedHashSet<>(ClassUtils.getAllInterfacesForClassAsSet(targetClass));
        types.add(targetClass);
        for (Class<?> type : types) {
            if (isGenerated(type)) {
                continue; // a JDK dynamic proxy's or lambda's methods are called through its interfaces, scanned here
            }
            refuseOnType(type);
            ReflectionUtils.doWithMethods(type, method -> {
                if (AnnotatedElementUtils.hasAnnotation(method, DistributedLock.class)) {
                    if (Modifier.isPrivate(method.getModifiers()) || Modifier.isFinal(method.getModifiers())
                            || Modifier.isStatic(method.getModifiers())) {
                        log.warn("@DistributedLock on {}.{}(..) has no effect: a private, final or static method"
                                + " cannot be intercepted; make it public and non-final, or use LockTemplate",
                                targetClass.getSimpleName(), method.getName());
                        return;
                    }
                    if (get(method, targetClass) != null) {
                        lockedMethods.add(method);
                    }
                }
            }, ReflectionUtils.USER_DECLARED_METHODS);
        }
        if (lockedMethods.isEmpty()) {
            return false;
        }
        if (!isGenerated(targetClass)) { // no class file to read
            warnAboutSelfInvocation(ClassUtils.getUserClass(targetClass), lockedMethods);
        }
        return true;
    }

    /**
     * A composed annotation that carries @DistributedLock may target classes, where it would lock
     * nothing: the annotation applies to methods. Refused at start-up, naming the class and annotation.
     */
    private static void refuseOnType(Class<?> type) {
        for (java.lang.annotation.Annotation present : type.getAnnotations()) {
            if (AnnotatedElementUtils.hasAnnotation(present.annotationType(), DistributedLock.class)) {
                throw new IllegalStateException("@" + present.annotationType().getSimpleName() + " on class "
                        + type.getName() + " carries @DistributedLock, which locks methods only: on a class it"
                        + " locks nothing. Put it on the methods to lock");
            }
        }
    }

    /**
     * Warns about calls of a locked method from inside its own class ({@code this.run()}): they do
     * not go through the proxy, so they take no lock. Found in the class's bytecode; a class that
     * cannot be read is skipped (this is a hint, not a check).
     */
    private static void warnAboutSelfInvocation(Class<?> type, List<Method> lockedMethods) {
        String owner = type.getName().replace('.', '/');
        Map<String, Method> byNameAndDescriptor = new java.util.HashMap<>();
        for (Method method : lockedMethods) {
            byNameAndDescriptor.put(method.getName() + org.springframework.asm.Type.getMethodDescriptor(method), method);
        }
        ClassLoader loader = type.getClassLoader() != null ? type.getClassLoader() : ClassUtils.getDefaultClassLoader();
        try (java.io.InputStream in = loader.getResourceAsStream(owner + ".class")) {
            if (in == null) {
                return;
            }
            new org.springframework.asm.ClassReader(in).accept(new org.springframework.asm.ClassVisitor(
                    org.springframework.asm.SpringAsmInfo.ASM_VERSION) {
                @Override
                public org.springframework.asm.MethodVisitor visitMethod(int access, String caller, String descriptor,
                        String signature, String[] exceptions) {
                    // "this" is the receiver when it was loaded (ALOAD 0) and no field read or other call
                    // came after it: this.run(), this.run(x). A field holding the proxy (self.run())
                    // reads a field after "this" and is not reported.
                    return new org.springframework.asm.MethodVisitor(org.springframework.asm.SpringAsmInfo.ASM_VERSION) {
                        private boolean thisLoaded;

                        @Override
                        public void visitVarInsn(int opcode, int variable) {
                            if (opcode == org.springframework.asm.Opcodes.ALOAD && variable == 0) {
                                thisLoaded = true;
                            }
                        }

                        @Override
                        public void visitFieldInsn(int opcode, String fieldOwner, String name, String fieldDescriptor) {
                            thisLoaded = false;
                        }

                        @Override
                        public void visitMethodInsn(int opcode, String calledOwner, String name, String calledDescriptor,
                                boolean isInterface) {
                            boolean onThis = thisLoaded;
                            thisLoaded = false;
                            Method called = byNameAndDescriptor.get(name + calledDescriptor);
                            if (called != null && onThis && calledOwner.equals(owner)
                                    && (access & org.springframework.asm.Opcodes.ACC_STATIC) == 0
                                    && opcode != org.springframework.asm.Opcodes.INVOKESTATIC) {
                                log.warn("@DistributedLock on {}.{}(..) is called from {}.{}(..) in the same class: such a"
                                        + " call does not go through the Spring proxy and takes no lock. Call it through"
                                        + " the bean (another bean, or an injected self reference), or use LockTemplate",
                                        type.getSimpleName(), name, type.getSimpleName(), caller);
                            }
                        }
                    };
                }
            }, org.springframework.asm.ClassReader.SKIP_DEBUG | org.springframework.asm.ClassReader.SKIP_FRAMES);
        } catch (java.io.IOException | RuntimeException e) {
            log.debug("could not read {} to look for self-invoked locked methods: {}", type.getName(), e.toString());
        }
    }

    /** Every operation resolved so far. */
    Collection<LockOperation> operations() {
        return cache.values().stream().flatMap(Optional::stream).toList();
    }

    /**
     * A class the JVM generated, a JDK dynamic proxy ($ProxyNN) or a lambda (Config$$Lambda/0x…): named
     * differently on every replica, without parameter names or a class file; its interfaces speak for it.
     */
    static boolean isGenerated(Class<?> type) {
        return Proxy.isProxyClass(type) || ClassUtils.isLambdaClass(type);
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
        // A generated class's method (a JDK proxy's, a lambda's) has no parameter names: the interface's has.
        boolean generated = targetClass != null && isGenerated(targetClass);
        if (generated && method.getDeclaringClass() == targetClass) {
            method = ClassUtils.getInterfaceMethodIfPossible(method, targetClass); // as proxy creation asks with a lambda's own
        }
        Method specific = targetClass == null || generated ? method : AopUtils.getMostSpecificMethod(method, targetClass);
        DistributedLock annotation = AnnotatedElementUtils.findMergedAnnotation(specific, DistributedLock.class);
        if (annotation == null && specific != method) {
            annotation = AnnotatedElementUtils.findMergedAnnotation(method, DistributedLock.class);
        }
        if (annotation == null && generated) {
            // Two interfaces of a JDK proxy or lambda that declare the same method: a call comes with the
            // first one's, and the annotation may be on another's.
            for (Class<?> type : ClassUtils.getAllInterfacesForClassAsSet(targetClass)) {
                Method declared = ReflectionUtils.findMethod(type, method.getName(), method.getParameterTypes());
                if (declared != null && (annotation = AnnotatedElementUtils.findMergedAnnotation(declared,
                        DistributedLock.class)) != null) {
                    specific = declared;
                    break;
                }
            }
        }
        if (annotation == null) {
            return NONE;
        }
        // The user's class, never a proxy's: a CGLIB subclass is named after it, but a JDK dynamic proxy
        // ($ProxyNN, numbered in creation order) and a lambda (Config$$Lambda/0x…, an address) are not
        // the same on every replica, and the interface that declares the method stands for them.
        Class<?> owner = targetClass == null || generated ? method.getDeclaringClass() : ClassUtils.getUserClass(targetClass);
        String description = "@DistributedLock on " + owner.getSimpleName() + "." + method.getName() + "(..)";
        String keyText = resolvePlaceholders(annotation.key());
        String keyExpression = null;
        String fixedKey = null;
        if (keyText.isBlank()) {
            fixedKey = defaultKey(owner, specific);
        } else {
            keyExpression = keyText;
            Expression parsed;
            try {
                parsed = evaluator.parse(keyExpression, specific, owner);
            } catch (ParseException e) {
                throw new IllegalStateException(description + ": key expression '" + keyExpression
                        + "' does not parse: " + e.getMessage() + ". A literal key needs quotes: \"'my-key'\"", e);
            }
            checkVariables(description, keyExpression, parsed, specific);
            checkRootProperties(description, keyExpression, parsed);
        }
        boolean scheduled = AnnotatedElementUtils.hasAnnotation(specific, Scheduled.class)
                || AnnotatedElementUtils.hasAnnotation(specific, Schedules.class);
        LockOperation operation = new LockOperation(specific, description, keyExpression, fixedKey,
                duration(description, "waitAtMost", annotation.waitAtMost()),
                duration(description, "leaseFor", annotation.leaseFor()),
                duration(description, "holdAtLeast", annotation.holdAtLeast()), annotation.shared(),
                annotation.permits(), switch (annotation.mode()) {
                    case DEFAULT -> null;
                    case ADVISORY -> LockMode.ADVISORY;
                    case LEASE -> LockMode.LEASE;
                }, annotation.whenLocked(), scheduled, annotation.inTransaction(), shape(description, specific, targetClass),
                scheduled && defaults != null ? defaults.scheduledWait() : null,
                scheduled && defaults != null ? defaults.scheduledHoldAtLeast() : null);
        check(operation);
        return Optional.of(operation);
    }

    /**
     * The key of a method without one: the (user, never the proxy's) class's fully qualified name, the method
     * and its parameter types' fully qualified names (simple names made overloads on two packages'
     * same-named types share a lock). Distinct across packages and overloads, the same on every replica.
     */
    static String defaultKey(Class<?> owner, Method method) {
        String key = owner.getName() + "." + method.getName() + "("
                + Arrays.stream(method.getParameterTypes()).map(Class::getTypeName).collect(Collectors.joining(","))
                + ")";
        if (key.length() <= LockRequest.MAX_KEY_LENGTH) {
            return key;
        }
        // Too long for a key: keep a readable head and make it unique with a hash of the whole.
        String hash = DigestUtils.md5DigestAsHex(key.getBytes(StandardCharsets.UTF_8));
        return key.substring(0, LockRequest.MAX_KEY_LENGTH - hash.length() - 1) + "#" + hash;
    }

    /** Every {@code #name} in the key must be something the call defines: a parameter, #p0/#a0, #root. */
    private void checkVariables(String description, String expression, Expression parsed, Method method) {
        if (!(parsed instanceof SpelExpression spel)) {
            return;
        }
        String[] names = PARAMETER_NAMES.getParameterNames(method);
        Set<String> known = new LinkedHashSet<>(List.of("root", "this"));
        for (int i = 0; i < method.getParameterCount(); i++) {
            known.add("p" + i);
            known.add("a" + i);
        }
        if (names != null) {
            known.addAll(List.of(names));
        }
        List<String> unknown = new ArrayList<>();
        collectVariables(spel.getAST(), unknown);
        unknown.removeIf(known::contains);
        if (!unknown.isEmpty()) {
            throw new IllegalStateException(description + ": key expression '" + expression + "' uses #"
                    + String.join(", #", unknown) + ", which is not a parameter of the method; its parameters are "
                    + (names == null ? "unnamed (compile with -parameters, as Spring Boot's build plugins do, or use"
                            + " #p0, #p1...)" : (names.length == 0 ? "none" : "#" + String.join(", #", names))));
        }
    }

    /** What a key expression can read from the call itself ({@code #root}): LockKeyEvaluator.LockKeyRoot's properties. */
    private static final Set<String> ROOT_PROPERTIES = Set.of("methodName", "method", "args", "target", "targetClass");

    /**
     * Every bare name the key reads from the call itself must be one it has. A literal key written
     * without quotes, {@code key = "nightly-report"}, parses as {@code nightly - report}, two such
     * names, and would fail at every call (every tick of a {@code @Scheduled} job) instead of here.
     */
    private static void checkRootProperties(String description, String expression, Expression parsed) {
        if (!(parsed instanceof SpelExpression spel)) {
            return;
        }
        List<String> unknown = new ArrayList<>();
        collectRootProperties(spel.getAST(), true, unknown);
        if (!unknown.isEmpty()) {
            throw new IllegalStateException(description + ": key expression '" + expression + "' reads "
                    + String.join(", ", unknown) + " from the call, which has no such "
                    + (unknown.size() == 1 ? "property" : "properties") + " (it has " + String.join(", ",
                            new java.util.TreeSet<>(ROOT_PROPERTIES)) + "; parameters are #name). A literal key"
                    + " needs quotes: \"'" + expression + "'\"");
        }
    }

    /**
     * Collects the property names read from the root object: {@code onRoot} says whether {@code node}
     * is evaluated against it. A step after the first in a chain ({@code #order.id}) reads the value
     * before it, and a projection or selection reads each element; the arguments of a method call
     * and an index are evaluated against the root again.
     */
    private static void collectRootProperties(SpelNode node, boolean onRoot, List<String> into) {
        if (node instanceof org.springframework.expression.spel.ast.PropertyOrFieldReference property) {
            if (onRoot && !ROOT_PROPERTIES.contains(property.getName())) {
                into.add(property.getName());
            }
            return;
        }
        if (node instanceof org.springframework.expression.spel.ast.Projection
                || node instanceof org.springframework.expression.spel.ast.Selection) {
            return;
        }
        if (node instanceof org.springframework.expression.spel.ast.CompoundExpression) {
            for (int i = 0; i < node.getChildCount(); i++) {
                SpelNode step = node.getChild(i);
                if (i == 0) {
                    collectRootProperties(step, onRoot, into);
                } else if (!(step instanceof org.springframework.expression.spel.ast.PropertyOrFieldReference)) {
                    collectRootProperties(step, false, into);
                }
            }
            return;
        }
        boolean childrenOnRoot = onRoot || node instanceof org.springframework.expression.spel.ast.MethodReference
                || node instanceof org.springframework.expression.spel.ast.Indexer;
        // A bare name as an index ({@code #headers[tenant]}) or an inline map's key ({@code {tenant: #id}})
        // is a literal key when the target is a map: not read from the call.
        boolean bareNamesAreKeys = node instanceof org.springframework.expression.spel.ast.Indexer;
        for (int i = 0; i < node.getChildCount(); i++) {
            SpelNode child = node.getChild(i);
            boolean literalKey = child instanceof org.springframework.expression.spel.ast.PropertyOrFieldReference
                    && (bareNamesAreKeys
                            || (node instanceof org.springframework.expression.spel.ast.InlineMap && i % 2 == 0));
            if (!literalKey) {
                collectRootProperties(child, childrenOnRoot, into);
            }
        }
    }

    private static void collectVariables(SpelNode node, List<String> into) {
        if (node instanceof VariableReference) {
            into.add(node.toStringAST().substring(1));
        }
        for (int i = 0; i < node.getChildCount(); i++) {
            collectVariables(node.getChild(i), into);
        }
    }

    /**
     * How long the method's work runs. A return type whose completion pglock cannot see is refused
     * here, naming the method, instead of locking nothing at every call.
     */
    private static LockOperation.Shape shape(String description, Method method, Class<?> targetClass) {
        Class<?> type = method.getReturnType();
        if (KotlinDetector.isSuspendingFunction(method)) {
            if (AsyncSupport.COROUTINES) {
                Class<?> result = ReactiveLocking.suspendResult(method);
                boolean flow = result != null && ReactiveLocking.isFlow(result);
                if (result != null && (flow ? !result.getName().equals("kotlinx.coroutines.flow.Flow")
                        : AsyncSupport.isReactive(result) || org.reactivestreams.Publisher.class.isAssignableFrom(result))) {
                    // Spring hands the interceptor such a result's items (or value) and gives the caller
                    // what it adapts back, which is not the declared type: the caller would get the first
                    // item, or a ClassCastException, under a lock released then. Only Flow itself is
                    // adapted back.
                    throw new IllegalStateException(description + " is a Kotlin suspend function that returns "
                            + result.getName() + ", which Spring does not hand back as it was declared: return the"
                            + " value itself, or a Flow declared as Flow, or drop suspend to return the publisher"
                            + " (its lock is then held until it completes)");
                }
                if (!flow && result != null && worksLater(result)) {
                    // Spring hands the interceptor a Mono of the function's value: the lock ends when the
                    // value is ready, before MVC runs or streams what it carries.
                    throw new IllegalStateException(description + " is a Kotlin suspend function that returns "
                            + result.getName() + ", whose work runs after the function returned, so the lock would"
                            + " end before that work. Lock the work itself (a @DistributedLock method it calls, or"
                            + " LockTemplate inside it), or return once it is done");
                }
                return LockOperation.Shape.REACTIVE; // Spring AOP hands interceptors a publisher for it
            }
            throw new IllegalStateException(description + " is a Kotlin suspend function: pglock holds its lock until"
                    + " it completes through Reactor, which needs kotlinx-coroutines-reactor and kotlin-reflect on the"
                    + " classpath. Add them, or return a Mono");
        }
        if (CompletionStage.class.isAssignableFrom(type)) {
            refuseValueWhoseWorkRunsLater(description, type, method, targetClass, CompletionStage.class);
            return LockOperation.Shape.COMPLETION_STAGE;
        }
        if (Future.class.isAssignableFrom(type)) {
            throw new IllegalStateException(description + " returns " + type.getName() + ", whose completion pglock"
                    + " cannot observe, so the lock would end before the work: return CompletableFuture (or"
                    + " CompletionStage) instead");
        }
        if (AsyncSupport.isReactive(type)) {
            Class<?> instead = ReactiveLocking.handsBackInstead(type);
            if (instead != null) {
                throw new IllegalStateException(description + " returns " + type.getName() + ", a subtype of "
                        + instead.getName() + ": pglock hands the caller a " + instead.getSimpleName() + " that holds"
                        + " the lock until it completes, which is not a " + type.getSimpleName() + ", so every call"
                        + " would fail with a ClassCastException. Declare " + instead.getSimpleName());
            }
            org.springframework.core.ReactiveAdapter adapter =
                    org.springframework.core.ReactiveAdapterRegistry.getSharedInstance().getAdapter(type);
            if (adapter != null && !adapter.isMultiValue()) {
                refuseValueWhoseWorkRunsLater(description, type, method, targetClass, type);
            }
            return LockOperation.Shape.REACTIVE;
        }
        if (isReactiveType(type)) {
            throw new IllegalStateException(description + " returns " + type.getName() + ", which runs after the"
                    + " method returns: pglock holds such locks through Project Reactor (io.projectreactor:reactor-core),"
                    + " which is not on the classpath. Add it, or return CompletableFuture");
        }
        refuseWorkThatRunsLater(description, type, method.getGenericReturnType());
        if (isLazyType(type)) {
            // May be lazy or not (a list's stream is done work; a streaming query's is not): warned, not refused.
            log.warn("{} returns {}: its lock is released when the method returns, before the work of a lazy one"
                    + " (a streaming query, a lazy map) runs as the caller consumes it; collect it inside the"
                    + " method, or return a Flux", description, type.getName());
        }
        return LockOperation.Shape.SYNCHRONOUS;
    }

    /**
     * Return types whose work runs after the method returned, in a way pglock cannot see end: the
     * lock would be released before that work, so they are refused, naming the method. Spring MVC's
     * asynchronous results (a {@code Callable}, a {@code DeferredResult}, an emitter, a streamed
     * body), also as the body of a {@code ResponseEntity}; a Kotlin {@code Job}; and the types of
     * reactive libraries that Spring's ReactiveAdapterRegistry does not adapt here (RxJava 1 and 2;
     * RxJava 3 and Mutiny without Project Reactor).
     */
    private static void refuseWorkThatRunsLater(String description, Class<?> type, java.lang.reflect.Type generic) {
        if (is(type, "org.springframework.http.HttpEntity")) {
            Class<?> body = generic instanceof java.lang.reflect.ParameterizedType parameterized
                    && parameterized.getActualTypeArguments().length == 1
                    ? org.springframework.core.ResolvableType.forType(parameterized.getActualTypeArguments()[0]).resolve()
                    : null;
            if (body != null && worksLater(body)) {
                throw new IllegalStateException(description + " returns " + type.getSimpleName() + "<"
                        + body.getName() + ">: Spring MVC runs or streams that body after the method returned, so"
                        + " the lock would end before it. Lock the work the body does (a @DistributedLock method it"
                        + " calls, or LockTemplate inside it), or return a CompletableFuture or a Mono that completes"
                        + " once the work is done");
            }
            return;
        }
        String kind = runsLater(type);
        if (kind != null) {
            throw new IllegalStateException(description + " returns " + type.getName() + ", " + kind + ", so the"
                    + " lock would end before that work. Lock the work itself (a @DistributedLock method it calls, or"
                    + " LockTemplate inside it), or return a CompletableFuture or a Mono that completes once it is"
                    + " done" + (type.getName().startsWith("kotlinx.") ? ", or make the method a suspend function" : ""));
        }
    }

    /**
     * A single-valued asynchronous result ({@code CompletableFuture<T>}, {@code Mono<T>}) whose value
     * is itself work that runs later: the lock is held until the result completes with the value, and
     * Spring MVC or WebFlux then run or stream that value's work (a {@code Mono<ResponseEntity<Flux<T>>>},
     * a {@code CompletableFuture<SseEmitter>}, a {@code Mono<Flux<T>>}). Refused at start-up, naming the
     * method; only what the declared type tells (a {@code Mono<?>} passes).
     */
    private static void refuseValueWhoseWorkRunsLater(String description, Class<?> type, Method method,
            Class<?> targetClass, Class<?> asType) {
        org.springframework.core.ResolvableType declared;
        Class<?> value;
        org.springframework.core.ResolvableType valueType;
        try {
            // Against the target class: a type variable bound by a subclass (Base<T>'s Mono<T>) is resolved.
            declared = org.springframework.core.ResolvableType.forMethodReturnType(method,
                    targetClass != null ? targetClass : method.getDeclaringClass()).as(asType);
            valueType = declared.getGeneric(0);
            value = valueType.resolve();
        } catch (RuntimeException | LinkageError unresolvable) { // a type argument missing from the classpath
            return;
        }
        if (value == null || value == Object.class) {
            return;
        }
        String why = null;
        if (is(value, "org.springframework.http.HttpEntity")) {
            Class<?> body = null;
            for (org.springframework.core.ResolvableType t = valueType; t != org.springframework.core.ResolvableType.NONE;
                    t = t.getSuperType()) {
                if (t.resolve() != null && t.resolve().getName().equals("org.springframework.http.HttpEntity")) {
                    body = t.getGeneric(0).resolve(); // spring-web need not be on the classpath: found by name
                    break;
                }
            }
            if (body != null && worksLater(body)) {
                why = "a " + value.getSimpleName() + " whose body, a " + body.getName() + ", Spring MVC or WebFlux runs or"
                        + " streams";
            }
        } else if (worksLater(value)) {
            why = "a " + value.getName() + ", whose work runs";
        }
        if (why != null) {
            String simple = type.getSimpleName();
            throw new IllegalStateException(description + " returns " + declared + ": its value is " + why + " after"
                    + " the " + simple + " completed, so the lock would end before that work. Lock the work itself (a"
                    + " @DistributedLock method it calls, or LockTemplate inside it), or complete the " + simple
                    + " once that work is done");
        }
    }

    /** Whether a value of this type carries work that runs after it was handed over (see refuseWorkThatRunsLater). */
    private static boolean worksLater(Class<?> type) {
        return CompletionStage.class.isAssignableFrom(type) || Future.class.isAssignableFrom(type)
                || AsyncSupport.isReactive(type) || isReactiveType(type) || runsLater(type) != null;
    }

    /**
     * What a value returned by work under a lock is, when it carries work that runs after it was
     * returned, where pglock cannot see it end (see {@link #refuseWorkThatRunsLater}); null when it
     * does not. For values whose declared type did not tell at start-up: {@code ResponseEntity<?>},
     * {@code Object}, a type variable, a template's callback.
     */
    static String workRunningLater(Object value) {
        if (value == null) {
            return null;
        }
        Class<?> type = value.getClass();
        Returned kind = RETURNED.get(type);
        if (kind == Returned.ENTITY) {
            Object body;
            try {
                body = type.getMethod("getBody").invoke(value);
            } catch (ReflectiveOperationException | RuntimeException unreadable) {
                return null;
            }
            if (body == null) {
                return null;
            }
            Class<?> bodyType = body.getClass();
            return worksLater(bodyType) ? "a " + type.getSimpleName() + " whose body, a " + known(bodyType) + ", Spring MVC runs or"
                    + " streams after the work returned" : null;
        }
        return kind == Returned.MVC_ASYNC ? "a " + known(type) + ", " + runsLater(type) : null;
    }

    /**
     * A value that may carry work that runs after it was returned, but is not only Spring MVC's (a
     * Callable, a Kotlin Job, an RxJava value): not refused once the work has run (it has side
     * effects, and such a value may be plain data there), but warned about, once per type; null
     * for any other value, and for a type already warned about.
     */
    static String mayRunLater(Object value) {
        if (value == null) {
            return null;
        }
        Class<?> type = value.getClass();
        return RETURNED.get(type) != Returned.MAY_RUN_LATER || !WARNED.add(type) ? null
                : "a " + known(type) + ", " + runsLater(type);
    }

    /** What a value of a class returned by locked work is: read once per class, as every locked call asks. */
    private enum Returned { PLAIN, ENTITY, MVC_ASYNC, MAY_RUN_LATER }

    private static final ClassValue<Returned> RETURNED = new ClassValue<>() {
        @Override
        protected Returned computeValue(Class<?> type) {
            if (is(type, "org.springframework.http.HttpEntity")) {
                return Returned.ENTITY;
            }
            if (isMvcAsync(type)) {
                return Returned.MVC_ASYNC;
            }
            return runsLater(type) != null ? Returned.MAY_RUN_LATER : Returned.PLAIN;
        }
    };

    private static final java.util.Set<Class<?>> WARNED = java.util.Collections.newSetFromMap(
            new org.springframework.util.ConcurrentReferenceHashMap<>(16,
                    org.springframework.util.ConcurrentReferenceHashMap.ReferenceType.WEAK));

    /** Spring MVC's own asynchronous results, which mean work that MVC runs or streams later. */
    private static final List<String> MVC_ASYNC = List.of("org.springframework.web.context.request.async.DeferredResult",
            "org.springframework.web.context.request.async.WebAsyncTask",
            "org.springframework.web.servlet.mvc.method.annotation.ResponseBodyEmitter",
            "org.springframework.web.servlet.mvc.method.annotation.StreamingResponseBody");

    private static boolean isMvcAsync(Class<?> type) {
        return MVC_ASYNC.stream().anyMatch(name -> is(type, name));
    }

    /** Whether the type is the named one or has it as a superclass or interface (named: it may not be on the classpath). */
    private static boolean is(Class<?> type, String name) {
        return type.getName().equals(name) || hasSupertype(type, name);
    }

    /** The type's name, or that of the asynchronous type it is (a lambda's class names nothing useful). */
    private static String known(Class<?> type) {
        if (!type.isSynthetic() && !type.isAnonymousClass() && !type.getName().contains("$$Lambda")) {
            return type.getName();
        }
        for (String name : List.of("java.util.concurrent.CompletionStage", "java.util.concurrent.Future",
                "org.reactivestreams.Publisher", "java.util.concurrent.Flow$Publisher", "kotlinx.coroutines.flow.Flow",
                "kotlinx.coroutines.Job", "java.util.concurrent.Callable",
                "org.springframework.web.servlet.mvc.method.annotation.StreamingResponseBody")) {
            if (hasSupertype(type, name)) {
                return name;
            }
        }
        return type.getName();
    }

    /**
     * The sources of RxJava 1, 2 and 3 and of Mutiny, matched by type (a value of their packages that is
     * not a source, a Tuple2 or a Notification, is plain data). Adapted ones never get here when
     * Reactor is on the classpath: they are reactive results (AsyncSupport.isReactive).
     */
    private static final List<String> UNADAPTED_SOURCES = List.of("rx.Observable", "rx.Single", "rx.Completable",
            "io.reactivex.ObservableSource", "io.reactivex.SingleSource", "io.reactivex.MaybeSource",
            "io.reactivex.CompletableSource", "io.reactivex.Flowable",
            "io.reactivex.rxjava3.core.ObservableSource", "io.reactivex.rxjava3.core.SingleSource",
            "io.reactivex.rxjava3.core.MaybeSource", "io.reactivex.rxjava3.core.CompletableSource",
            "io.reactivex.rxjava3.core.Flowable", "io.smallrye.mutiny.Uni", "io.smallrye.mutiny.Multi");

    /** Why a return type's work runs after the method returned, unseen by pglock; null when it does not. */
    private static String runsLater(Class<?> type) {
        if (UNADAPTED_SOURCES.stream().anyMatch(name -> is(type, name))) {
            return "whose work runs when it is subscribed to, after the method returned, and which Spring's"
                    + " ReactiveAdapterRegistry does not adapt here (it adapts RxJava 3 and Mutiny when Project"
                    + " Reactor is on the classpath)";
        }
        if (is(type, "java.util.concurrent.Callable")) {
            return "whose work runs when its caller calls it, after the method returned (Spring MVC calls it on"
                    + " another thread)";
        }
        if (isMvcAsync(type)) {
            return "whose work Spring MVC runs (or streams) after the method returned";
        }
        if (is(type, "kotlinx.coroutines.Job")) {
            return "whose coroutine runs on after the method returned";
        }
        return null;
    }

    /** Whether a superclass or an interface of the type (not the type itself) has this name. */
    private static boolean hasSupertype(Class<?> type, String name) {
        for (Class<?> t = type.getSuperclass(); t != null; t = t.getSuperclass()) {
            if (t.getName().equals(name)) {
                return true;
            }
        }
        return ClassUtils.getAllInterfacesForClassAsSet(type).stream().anyMatch(i -> i.getName().equals(name));
    }

    /** A type whose work may run as its caller consumes it, after the method returned. */
    private static boolean isLazyType(Class<?> type) {
        return java.util.stream.BaseStream.class.isAssignableFrom(type) || java.util.Iterator.class.isAssignableFrom(type)
                || type.getName().equals("kotlin.sequences.Sequence");
    }

    /** A lazy type that pglock cannot hold a lock across without Reactor. */
    private static boolean isReactiveType(Class<?> type) {
        for (Class<?> t = type; t != null && t != Object.class; t = t.getSuperclass()) {
            if (t.getName().startsWith("kotlinx.coroutines.flow.")) {
                return true;
            }
        }
        return ClassUtils.getAllInterfacesForClassAsSet(type).stream().map(Class::getName)
                .anyMatch(name -> name.equals("org.reactivestreams.Publisher")
                        || name.equals("java.util.concurrent.Flow$Publisher")
                        || name.startsWith("kotlinx.coroutines.flow."));
    }

    /** Refuses at start-up what could only fail at every call. */
    private void check(LockOperation operation) {
        Class<?> returnType = operation.method().getReturnType();
        if (operation.skipsWhenLocked() && returnType.isPrimitive() && returnType != void.class) {
            throw new IllegalStateException(operation.description() + ": "
                    + (operation.whenLocked() == DistributedLock.WhenLocked.SKIP ? "whenLocked = SKIP"
                            : "a @Scheduled method skips when the lock is taken, and")
                    + " cannot skip a method that returns " + returnType + " (there is no value to return); return a"
                    + " wrapper type or Optional, or use whenLocked = THROW");
        }
        if (operation.permits() != 0) {
            String invalid = dev.pglock.core.internal.PermitKeys.invalidPermits(operation.permits(),
                    operation.description() + " (0 takes the lock instead)");
            if (invalid != null) {
                throw new IllegalStateException(invalid);
            }
            if (operation.shared() || operation.inTransaction()) {
                throw new IllegalStateException(operation.description() + ": permits = " + operation.permits()
                        + " cannot be combined with " + (operation.shared() ? "shared = true (a permit has one holder)"
                                : "inTransaction = true (a permit does not join a transaction)"));
            }
        }
        if (operation.inTransaction() && operation.shape() != LockOperation.Shape.SYNCHRONOUS) {
            throw new IllegalStateException(operation.description() + ": inTransaction = true needs a method that"
                    + " completes its work before it returns (a transaction belongs to one thread), but it returns "
                    + returnType.getName());
        }
        if (defaults == null) {
            return;
        }
        Duration hold = operation.holdAtLeast() != null ? operation.holdAtLeast()
                : operation.defaultHoldAtLeast() != null ? operation.defaultHoldAtLeast() : defaults.holdAtLeast();
        LockMode mode = operation.mode() != null ? operation.mode() : defaults.mode();
        if (operation.inTransaction() && mode == LockMode.ADVISORY && operation.holdAtLeast() != null
                && !operation.holdAtLeast().isZero()) {
            throw new IllegalStateException(operation.description() + ": holdAtLeast = " + operation.holdAtLeast()
                    + " cannot apply to an advisory lock that joins the transaction (inTransaction = true): the"
                    + " commit ends it. Drop it, use lease mode, or take the lock around the transaction");
        }
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
