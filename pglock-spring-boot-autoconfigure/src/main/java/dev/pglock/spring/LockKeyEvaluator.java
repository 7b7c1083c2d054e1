package dev.pglock.spring;

import java.lang.reflect.Method;
import org.springframework.beans.factory.BeanFactory;
import org.springframework.context.expression.AnnotatedElementKey;
import org.springframework.context.expression.BeanFactoryResolver;
import org.springframework.context.expression.CachedExpressionEvaluator;
import org.springframework.context.expression.MethodBasedEvaluationContext;
import org.springframework.expression.Expression;

/**
 * Evaluates {@link DistributedLock#key()} expressions. Each expression is parsed once (cached by
 * method, target class and text) and evaluated against the call's arguments, like Spring's cache keys.
 */
final class LockKeyEvaluator extends CachedExpressionEvaluator {

    private final java.util.Map<ExpressionKey, Expression> cache = new java.util.concurrent.ConcurrentHashMap<>();
    private final BeanFactory beanFactory;

    LockKeyEvaluator(BeanFactory beanFactory) {
        this.beanFactory = beanFactory;
    }

    /** Parses the expression now, so a syntax error fails at start-up. */
    Expression parse(String expression, Method method, Class<?> targetClass) {
        return getExpression(cache, new AnnotatedElementKey(method, targetClass), expression);
    }

    Object evaluate(String expression, Method method, Class<?> targetClass, Object target, Object[] args) {
        LockKeyRoot root = new LockKeyRoot(method, args, target, targetClass);
        MethodBasedEvaluationContext context = new MethodBasedEvaluationContext(root, method, args,
                getParameterNameDiscoverer());
        if (beanFactory != null) {
            context.setBeanResolver(new BeanFactoryResolver(beanFactory));
        }
        return parse(expression, method, targetClass).getValue(context);
    }

    /** {@code #root} in a key expression. */
    public record LockKeyRoot(Method method, Object[] args, Object target, Class<?> targetClass) {

        public String getMethodName() {
            return method.getName();
        }

        public Method getMethod() {
            return method;
        }

        public Object[] getArgs() {
            return args;
        }

        public Object getTarget() {
            return target;
        }

        public Class<?> getTargetClass() {
            return targetClass;
        }
    }
}
