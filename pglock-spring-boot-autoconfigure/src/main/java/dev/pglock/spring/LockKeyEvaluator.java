package dev.pglock.spring;

import java.lang.reflect.Method;
import org.springframework.beans.factory.BeanFactory;
import org.springframework.context.expression.AnnotatedElementKey;
import org.springframework.context.expression.BeanFactoryResolver;
import org.springframework.context.expression.CachedExpressionEvaluator;
import org.springframework.context.expression.MethodBasedEvaluationContext;
import org.springframework.core.convert.TypeDescriptor;
import org.springframework.expression.EvaluationException;
import org.springframework.expression.Expression;
import org.springframework.expression.spel.SpelNode;
import org.springframework.expression.spel.ast.Elvis;
import org.springframework.expression.spel.ast.OpAnd;
import org.springframework.expression.spel.ast.OpOr;
import org.springframework.expression.spel.ast.OpPlus;
import org.springframework.expression.spel.ast.Projection;
import org.springframework.expression.spel.ast.Selection;
import org.springframework.expression.spel.ast.Ternary;
import org.springframework.expression.spel.ast.VariableReference;
import org.springframework.expression.spel.standard.SpelExpression;
import org.springframework.expression.spel.support.StandardTypeConverter;

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
        context.setTypeConverter(KEY_PARTS);
        Expression parsed = parse(expression, method, targetClass);
        if (parsed instanceof SpelExpression spel) {
            refuseNullOperands(spel.getAST(), context);
        }
        return parsed.getValue(context);
    }

    /**
     * SpEL's + writes a null operand as "null" (without asking the type converter): for a variable
     * that is an operand of + ({@code 'invoice:' + #id}), a null value is refused before the
     * expression runs, as a whole key that is null is. Only where the + always runs: not in a branch
     * that a condition may skip ({@code #id == null ? 'all' : 'invoice:' + #id}, the right side of
     * ?:, and, or), nor in a selection or projection. A null deeper in an operand (a property of an
     * argument) is not seen here either.
     */
    private static void refuseNullOperands(SpelNode node, MethodBasedEvaluationContext context) {
        if (node instanceof Selection || node instanceof Projection) {
            return;
        }
        boolean conditional = node instanceof Ternary || node instanceof Elvis || node instanceof OpAnd
                || node instanceof OpOr;
        for (int i = 0; i < (conditional ? Math.min(1, node.getChildCount()) : node.getChildCount()); i++) {
            SpelNode child = node.getChild(i);
            if (node instanceof OpPlus && child instanceof VariableReference) {
                String name = child.toStringAST().substring(1);
                if (!name.equals("this") && !name.equals("root") && context.lookupVariable(name) == null) {
                    throw new KeyPartRefused("#" + name + " is null, and + would write \"null\" into the key for"
                            + " every such call. If it names a parameter, compile with -parameters (Spring Boot's"
                            + " build plugins do) or use #p0 / #a0");
                }
            }
            refuseNullOperands(child, context);
        }
    }

    /** A part of a key refused while the expression ran; its message says why (see DistributedLockInterceptor). */
    static final class KeyPartRefused extends EvaluationException {
        KeyPartRefused(String message) {
            super(message);
        }
    }

    /**
     * Turns values into strings for SpEL (its + on a string, a method's String parameter) as the
     * standard converter does, but refuses a value whose string form does not identify a lock: a
     * value with Object's identity toString (also inside a record's string, or an array's, a
     * collection's or a map's, whose joined elements are stable otherwise: 'batch:' + #ids is
     * "batch:1,2,3"). The checks of a whole key value, for the parts of a key built from values.
     */
    private static final StandardTypeConverter KEY_PARTS = new StandardTypeConverter() {
        /**
         * For SpEL's + alone, every value can become a String, by its toString: + does that itself,
         * without asking the converter, when the conversion service has none (a class without a
         * String constructor), so this hands such a value to {@link #convertValue}, where it is
         * checked. Method resolution is left as it was (no String parameter matches more values).
         */
        @Override
        public boolean canConvert(TypeDescriptor sourceType, TypeDescriptor targetType) {
            return super.canConvert(sourceType, targetType) || (isString(targetType) && concatenating());
        }

        @Override
        public Object convertValue(Object value, TypeDescriptor sourceType, TypeDescriptor targetType) {
            Object converted = value != null && isString(targetType) && !super.canConvert(sourceType, targetType)
                    && concatenating() ? value.toString() : super.convertValue(value, sourceType, targetType);
            if (value != null && !(value instanceof CharSequence) && converted instanceof String string
                    && !DistributedLockInterceptor.identifiesAPart(value, string)) {
                throw new KeyPartRefused("it turns a " + value.getClass().getName() + " into a string that does not"
                        + " identify a lock (" + DistributedLockInterceptor.whyNotAPart(value) + ")."
                        + DistributedLockInterceptor.USE_INSTEAD);
            }
            return converted;
        }

        private static boolean isString(TypeDescriptor type) {
            return type != null && type.getType() == String.class;
        }

        private static boolean concatenating() {
            return StackWalker.getInstance().walk(frames -> frames.limit(6)
                    .anyMatch(frame -> frame.getClassName().equals(OpPlus.class.getName())));
        }
    };

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
