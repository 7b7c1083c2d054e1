package dev.pglock.spring.boot.autoconfigure;

import java.lang.annotation.Documented;
import java.lang.annotation.ElementType;
import java.lang.annotation.Retention;
import java.lang.annotation.RetentionPolicy;
import java.lang.annotation.Target;
import org.springframework.beans.factory.annotation.Qualifier;

/**
 * Marks the DataSource pglock should use when it is not the application's primary one (for example
 * a direct connection when the main pool goes through PgBouncer). Declare it with
 * {@code defaultCandidate = false}, so that it is injected only where this qualifier asks for it and
 * Boot still builds the application's own DataSource from {@code spring.datasource.*}:
 *
 * <pre>{@code
 * @Bean(defaultCandidate = false)
 * @PgLockDataSource
 * HikariDataSource lockDataSource() { ... }
 * }</pre>
 */
@Target({ElementType.FIELD, ElementType.METHOD, ElementType.PARAMETER, ElementType.TYPE, ElementType.ANNOTATION_TYPE})
@Retention(RetentionPolicy.RUNTIME)
@Documented
@Qualifier
public @interface PgLockDataSource {
}
