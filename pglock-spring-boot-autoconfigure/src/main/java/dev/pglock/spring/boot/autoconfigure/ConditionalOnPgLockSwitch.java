package dev.pglock.spring.boot.autoconfigure;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import org.springframework.boot.autoconfigure.condition.ConditionOutcome;
import org.springframework.boot.autoconfigure.condition.SpringBootCondition;
import org.springframework.boot.context.properties.bind.Binder;
import org.springframework.context.annotation.ConditionContext;
import org.springframework.context.annotation.Conditional;
import org.springframework.core.type.AnnotatedTypeMetadata;

/**
 * Matches when the boolean switch {@link #name()} is {@link #whenOn() on} (or off), reading it the
 * way its property binds: {@code true}/{@code false}, {@code on}/{@code off}, {@code yes}/{@code no},
 * {@code 1}/{@code 0}. Any other value fails the start, naming the property and the value: a mistyped
 * {@code pglock.enabled=ture} would otherwise have turned every lock off without a word (Spring's
 * {@code @ConditionalOnProperty(havingValue = "true")} reads it as "not true").
 */
@Retention(RetentionPolicy.RUNTIME)
@Target({ElementType.TYPE, ElementType.METHOD})
@Documented
@Conditional(ConditionalOnPgLockSwitch.OnSwitch.class)
@interface ConditionalOnPgLockSwitch {

    /** The property, e.g. {@code pglock.enabled}. */
    String name();

    /** The switch's value when the property is not set. */
    boolean ifMissing();

    /** Whether the condition matches when the switch is on (true) or off (false). */
    boolean whenOn() default true;

    /** Reads the switch through the Binder, whose conversion refuses what is not a boolean. */
    final class OnSwitch extends SpringBootCondition {

        @Override
        public ConditionOutcome getMatchOutcome(ConditionContext context, AnnotatedTypeMetadata metadata) {
            var attributes = metadata.getAnnotationAttributes(ConditionalOnPgLockSwitch.class.getName());
            String name = (String) attributes.get("name");
            boolean ifMissing = (Boolean) attributes.get("ifMissing");
            boolean whenOn = (Boolean) attributes.get("whenOn");
            boolean on = Binder.get(context.getEnvironment()).bind(name, Boolean.class).orElse(ifMissing);
            String said = name + " is " + (on ? "on" : "off");
            return on == whenOn ? ConditionOutcome.match(said) : ConditionOutcome.noMatch(said);
        }
    }
}
