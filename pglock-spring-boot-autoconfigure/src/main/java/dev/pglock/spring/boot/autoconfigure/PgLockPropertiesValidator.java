package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.internal.Identifiers;
import java.time.Duration;
import org.springframework.boot.context.properties.source.InvalidConfigurationPropertyValueException;

/**
 * Checks {@code pglock.*} when the application starts, so a wrong value stops it with the property's
 * name, its value and what is wrong, before any lock is taken.
 */
final class PgLockPropertiesValidator {

    private PgLockPropertiesValidator() {
    }

    /**
     * Binds {@code pglock.*} from the environment, refusing a name that is not a pglock property, and
     * checks the values: the first step of the start, before any annotation is checked against them.
     */
    static PgLockProperties bindAndValidate(org.springframework.core.env.Environment environment) {
        PgLockProperties properties = org.springframework.boot.context.properties.bind.Binder.get(environment)
                .bind("pglock", org.springframework.boot.context.properties.bind.Bindable.of(PgLockProperties.class),
                        new org.springframework.boot.context.properties.bind.handler.NoUnboundElementsBindHandler(
                                org.springframework.boot.context.properties.bind.BindHandler.DEFAULT))
                .orElseGet(PgLockProperties::new);
        validate(properties);
        return properties;
    }

    static void validate(PgLockProperties p) {
        String namespace = p.getNamespace();
        if (namespace == null || namespace.length() > 255 || namespace.indexOf('\0') >= 0) {
            throw invalid("pglock.namespace", namespace, "must be at most 255 characters, without NUL");
        }
        notNegative("pglock.wait", p.getWait());
        notNegative("pglock.hold-at-least", p.getHoldAtLeast());
        positive("pglock.lease", p.getLease());
        atLeastMinimum("pglock.heartbeat-interval", p.getHeartbeatInterval());
        atLeastMinimum("pglock.connection-wait-timeout", p.getConnectionWaitTimeout());
        notNegative("pglock.scheduled.wait", p.getScheduled().getWait());
        notNegative("pglock.scheduled.hold-at-least", p.getScheduled().getHoldAtLeast());
        // Checked in both modes: any method may ask for lease mode, and a value that is wrong in one
        // mode should not wait for a mode switch to fail.
        if (p.getLease().compareTo(p.getHeartbeatInterval().multipliedBy(2)) <= 0) {
            throw invalid("pglock.lease", p.getLease(), "must be longer than twice pglock.heartbeat-interval ("
                    + p.getHeartbeatInterval() + "); three times or more survives a missed heartbeat");
        }
        if (p.getHoldAtLeast().compareTo(p.getLease()) > 0) {
            throw invalid("pglock.hold-at-least", p.getHoldAtLeast(), "must not be longer than pglock.lease ("
                    + p.getLease() + ")");
        }
        if (p.getScheduled().getHoldAtLeast().compareTo(p.getLease()) > 0) {
            throw invalid("pglock.scheduled.hold-at-least", p.getScheduled().getHoldAtLeast(),
                    "must not be longer than pglock.lease (" + p.getLease() + ")");
        }
        if (p.getOwner() != null && (p.getOwner().length() > 100 || p.getOwner().indexOf('\0') >= 0)) {
            throw invalid("pglock.owner", p.getOwner(), "must be at most 100 characters, without NUL");
        }
        if (p.getLockSessions() < 1 || p.getLockSessions() > 64) {
            throw invalid("pglock.lock-sessions", p.getLockSessions(), "must be between 1 and 64");
        }
        if (p.getWaitLines() < 0 || p.getWaitLines() > 16) {
            throw invalid("pglock.wait-lines", p.getWaitLines(), "must be between 0 and 16");
        }
        String table = p.getTable().getName();
        try {
            Identifiers.quoted("pglock.table.name", table);
        } catch (IllegalArgumentException e) {
            throw invalid("pglock.table.name", table, "must be a lowercase SQL identifier, optionally"
                    + " schema-qualified (letters a-z, digits and _, not starting with a digit, at most 63 each)");
        }
        if (table.substring(table.indexOf('.') + 1).length() > 51) {
            throw invalid("pglock.table.name", table, "must be at most 51 characters (its sequence adds _fencing_seq)");
        }
    }

    private static void notNegative(String name, Duration value) {
        if (value == null || value.isNegative()) {
            throw invalid(name, value, "must not be negative");
        }
    }

    /** A bare number is milliseconds; below this, it was almost certainly meant as seconds. */
    private static final Duration MINIMUM = Duration.ofMillis(50);

    private static void atLeastMinimum(String name, Duration value) {
        positive(name, value);
        if (value.compareTo(MINIMUM) < 0) {
            throw invalid(name, value, "must be at least 50ms (a number without a unit is milliseconds: write 2s)");
        }
    }

    private static void positive(String name, Duration value) {
        if (value == null || value.isNegative() || value.isZero()) {
            throw invalid(name, value, "must be positive");
        }
    }

    private static InvalidConfigurationPropertyValueException invalid(String name, Object value, String reason) {
        return new InvalidConfigurationPropertyValueException(name, value, reason);
    }
}
