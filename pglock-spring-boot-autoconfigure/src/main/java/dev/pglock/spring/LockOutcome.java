package dev.pglock.spring;

import java.util.NoSuchElementException;
import java.util.Optional;

/**
 * What {@link LockOperations#tryExecute} came to: whether the callback ran (the lock was had), and
 * what it returned, which may be {@code null}.
 *
 * @param <T> what the callback returns
 */
public final class LockOutcome<T> {

    private static final LockOutcome<?> NOT_RUN = new LockOutcome<>(false, null);

    private final boolean ran;
    private final T value;

    private LockOutcome(boolean ran, T value) {
        this.ran = ran;
        this.value = value;
    }

    /** The callback ran and returned {@code value}. */
    public static <T> LockOutcome<T> ran(T value) {
        return new LockOutcome<>(true, value);
    }

    /** The lock was held elsewhere for the whole wait: the callback did not run. */
    @SuppressWarnings("unchecked")
    public static <T> LockOutcome<T> notRun() {
        return (LockOutcome<T>) NOT_RUN;
    }

    /** Whether the callback ran. */
    public boolean ran() {
        return ran;
    }

    /**
     * What the callback returned.
     *
     * @throws NoSuchElementException when it did not run
     */
    public T value() {
        if (!ran) {
            throw new NoSuchElementException("the callback did not run: the lock was held elsewhere");
        }
        return value;
    }

    /** What the callback returned, or {@code other} when it did not run. */
    public T orElse(T other) {
        return ran ? value : other;
    }

    /** What the callback returned; empty when it did not run or returned {@code null}. */
    public Optional<T> toOptional() {
        return ran ? Optional.ofNullable(value) : Optional.empty();
    }

    @Override
    public String toString() {
        return ran ? "LockOutcome[ran, " + value + "]" : "LockOutcome[not run]";
    }
}
