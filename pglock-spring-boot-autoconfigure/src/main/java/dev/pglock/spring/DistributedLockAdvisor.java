package dev.pglock.spring;

import java.lang.reflect.Method;
import org.aopalliance.aop.Advice;
import org.springframework.aop.Pointcut;
import org.springframework.aop.support.AbstractPointcutAdvisor;
import org.springframework.aop.support.StaticMethodMatcherPointcut;
import org.springframework.beans.factory.BeanFactory;
import org.springframework.beans.factory.BeanFactoryAware;
import org.springframework.beans.factory.ObjectProvider;

/**
 * Applies {@link DistributedLock} to the beans that use it. Its order decides how it nests with
 * other advice: the default sits just outside {@code @Transactional}'s, so a lock is acquired
 * before the transaction begins and released after it ends.
 */
public final class DistributedLockAdvisor extends AbstractPointcutAdvisor implements BeanFactoryAware {

    private final ObjectProvider<LockTemplate> templates;
    private LockOperationSource source;
    private DistributedLockInterceptor interceptor;

    /** The template is looked up at the first locked call, so creating the advisor touches no DataSource. */
    public DistributedLockAdvisor(ObjectProvider<LockTemplate> templates, int order) {
        this.templates = templates;
        setOrder(order);
        setBeanFactory(null);
    }

    @Override
    public void setBeanFactory(BeanFactory beanFactory) {
        LockKeyEvaluator evaluator = new LockKeyEvaluator(beanFactory);
        this.source = new LockOperationSource(beanFactory, evaluator);
        this.interceptor = new DistributedLockInterceptor(source, evaluator, templates);
    }

    @Override
    public Pointcut getPointcut() {
        return new StaticMethodMatcherPointcut() {
            @Override
            public boolean matches(Method method, Class<?> targetClass) {
                return source.get(method, targetClass) != null;
            }
        };
    }

    @Override
    public Advice getAdvice() {
        return interceptor;
    }
}
