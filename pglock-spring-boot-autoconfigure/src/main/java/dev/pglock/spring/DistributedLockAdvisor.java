package dev.pglock.spring;

import java.lang.reflect.Method;
import java.util.stream.Collectors;
import org.aopalliance.aop.Advice;
import org.springframework.aop.ClassFilter;
import org.springframework.aop.Advisor;
import org.springframework.aop.framework.Advised;
import org.springframework.beans.factory.config.ConfigurableListableBeanFactory;
import org.springframework.transaction.interceptor.TransactionInterceptor;
import org.springframework.aop.Pointcut;
import org.springframework.aop.support.AbstractPointcutAdvisor;
import org.springframework.aop.support.StaticMethodMatcherPointcut;
import org.springframework.beans.factory.BeanFactory;
import org.springframework.beans.factory.BeanFactoryAware;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.beans.factory.SmartInitializingSingleton;
import org.springframework.core.Ordered;

/**
 * Applies {@link DistributedLock} to the beans that use it. Its order decides how it nests with
 * other advice: the default sits just outside {@code @Transactional}'s, so a lock is acquired
 * before the transaction begins and released after it ends. Its twin,
 * {@link #transactionAdvisor()}, sits inside the transaction: it takes the locks that join the
 * transaction and checks the others before the commit.
 */
public final class DistributedLockAdvisor extends AbstractPointcutAdvisor
        implements BeanFactoryAware, SmartInitializingSingleton {

    private final ObjectProvider<LockTemplate> templates;
    private final LockDefaults defaults;
    private LockOperationSource source;
    private DistributedLockInterceptor interceptor;
    private DistributedLockInterceptor innerInterceptor;
    private final TransactionAdvisor transactionAdvisor = new TransactionAdvisor();
    /** One instance for the advisor's life: CGLIB reuses proxy classes only for equal pointcuts. */
    private final Pointcut pointcut = new StaticMethodMatcherPointcut() {
        {
            setClassFilter(new ClassFilter() {
                @Override
                public boolean matches(Class<?> type) {
                    return source.hasLockedMethods(type);
                }
            });
        }

        @Override
        public boolean matches(Method method, Class<?> targetClass) {
            return source.get(method, targetClass) != null;
        }
    };

    /**
     * The template is looked up once every singleton exists, so creating the advisor touches no
     * DataSource. {@code defaults} are what each annotation is checked against at start-up.
     */
    public DistributedLockAdvisor(ObjectProvider<LockTemplate> templates, LockDefaults defaults, int order) {
        this.templates = templates;
        this.defaults = defaults;
        setOrder(order);
        setBeanFactory(null);
    }

    private BeanFactory beanFactory;

    @Override
    public void setBeanFactory(BeanFactory beanFactory) {
        this.beanFactory = beanFactory;
        LockKeyEvaluator evaluator = new LockKeyEvaluator(beanFactory);
        this.source = new LockOperationSource(beanFactory, evaluator, defaults);
        ObjectProvider<LockSkipListener> skipListeners = beanFactory == null ? null
                : beanFactory.getBeanProvider(LockSkipListener.class);
        this.interceptor = new DistributedLockInterceptor(source, evaluator, templates, false, skipListeners);
        this.innerInterceptor = new DistributedLockInterceptor(source, evaluator, templates, true, skipListeners);
    }

    /**
     * The advisor that applies inside {@code @Transactional}: register it as a bean of its own (the
     * auto-configuration does). Its order is the lowest precedence, the transaction advisor's
     * default; registered after it, it nests inside.
     */
    public Advisor transactionAdvisor() {
        return transactionAdvisor;
    }

    /** Inside the transaction; shares the outer advisor's pointcut and operations. */
    private final class TransactionAdvisor extends AbstractPointcutAdvisor {

        TransactionAdvisor() {
            setOrder(Ordered.LOWEST_PRECEDENCE);
        }

        @Override
        public Pointcut getPointcut() {
            return pointcut;
        }

        @Override
        public Advice getAdvice() {
            return innerInterceptor;
        }
    }

    /**
     * Once the application's beans exist: a locked method without a lock template (no DataSource, or
     * several templates) stops the start here, naming the methods; a mode that only some methods use
     * gets its client now, so a missing lease table fails the start and not the first call.
     */
    @Override
    public void afterSingletonsInstantiated() {
        if (source.operations().isEmpty()) {
            return;
        }
        LockTemplate template = templates.getIfUnique();
        if (template == null) {
            throw new IllegalStateException("no single LockTemplate bean for "
                    + source.operations().stream().map(LockOperation::description).distinct()
                            .collect(Collectors.joining(", "))
                    + ": pglock needs a PostgreSQL DataSource (spring.datasource.*), or define one LockTemplate bean");
        }
        interceptor.use(template);
        innerInterceptor.use(template);
        checkNesting();
        source.operations().stream().map(LockOperation::mode).filter(mode -> mode != null).distinct()
                .forEach(template::inMode);
    }

    /**
     * The inner advisor must sit inside {@code @Transactional}'s, or a lock that joins the transaction
     * finds none and a lost lock cannot roll one back. Equal orders (both the lowest precedence) nest
     * by registration, which the auto-configuration arranges; an application that reorders the
     * transaction advisor is told here, at start-up, which bean is affected.
     */
    private void checkNesting() {
        if (!(beanFactory instanceof ConfigurableListableBeanFactory factory)) {
            return;
        }
        for (String name : factory.getSingletonNames()) {
            if (!(factory.getSingleton(name) instanceof Advised advised)) {
                continue;
            }
            Advisor[] advisors = advised.getAdvisors();
            int inner = -1;
            int outer = -1;
            int transaction = -1;
            for (int i = 0; i < advisors.length; i++) {
                if (advisors[i] == transactionAdvisor) {
                    inner = i;
                } else if (advisors[i] == this) {
                    outer = i;
                } else if (advisors[i].getAdvice() instanceof TransactionInterceptor) {
                    transaction = i;
                }
            }
            checkBothApply(name, advised, outer >= 0, inner >= 0);
            if (inner >= 0 && transaction > inner) {
                throw new IllegalStateException("bean '" + name + "' has @DistributedLock and @Transactional methods,"
                        + " but pglock's transaction advisor runs outside the transaction advisor, so locks cannot join"
                        + " or guard its transactions: give @EnableTransactionManagement an order below"
                        + " Ordered.LOWEST_PRECEDENCE (e.g. LOWEST_PRECEDENCE - 1 is pglock.aspect-order's default,"
                        + " so use pglock.aspect-order = LOWEST_PRECEDENCE - 2 with it)");
            }
        }
    }

    /**
     * The two advisors apply together (they share one pointcut) unless an auto-proxy creator picks
     * among them: the infrastructure one ({@code spring.aop.auto=false}) skips an advisor bean without
     * {@code @Role(ROLE_INFRASTRUCTURE)}. With one of them missing, the locks it takes would never be
     * taken, silently: the start stops here, naming the bean.
     */
    private void checkBothApply(String name, Advised advised, boolean outer, boolean inner) {
        if (outer == inner) {
            return;
        }
        Class<?> type = org.springframework.aop.framework.AopProxyUtils.ultimateTargetClass(advised);
        boolean needsOuter = false;
        boolean needsInner = false;
        for (LockOperation operation : source.operations()) {
            if (operation.method().getDeclaringClass().isAssignableFrom(type)) {
                needsOuter |= !operation.inTransaction();
                needsInner |= operation.inTransaction();
            }
        }
        if (!outer && needsOuter) {
            throw new IllegalStateException("bean '" + name + "' has @DistributedLock methods, but only pglock's"
                    + " transaction advisor applies to it, not the DistributedLockAdvisor: its locks would never be"
                    + " taken. An auto-proxy creator that applies only infrastructure advisors (spring.aop.auto=false)"
                    + " skips a DistributedLockAdvisor bean without @Role(BeanDefinition.ROLE_INFRASTRUCTURE): give"
                    + " it that role, or leave the advisor to the starter");
        }
        if (!inner && needsInner) {
            throw new IllegalStateException("bean '" + name + "' has @DistributedLock(inTransaction = true) methods,"
                    + " but pglock's transaction advisor does not apply to it: their locks would never be taken."
                    + " Register DistributedLockAdvisor.transactionAdvisor() as a bean of its own, with"
                    + " @Role(BeanDefinition.ROLE_INFRASTRUCTURE) (the starter does)");
        }
    }

    @Override
    public Pointcut getPointcut() {
        return pointcut;
    }

    @Override
    public Advice getAdvice() {
        return interceptor;
    }
}
