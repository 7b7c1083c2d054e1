package dev.pglock.spring.boot.autoconfigure;

import static org.assertj.core.api.Assertions.assertThat;

import dev.pglock.spring.adapters.PgLockRegistry;
import dev.pglock.spring.adapters.PgLockShedLockProvider;
import dev.pglock.test.PgTestDatabase;
import java.time.Duration;
import java.time.Instant;
import net.javacrumbs.shedlock.core.LockConfiguration;
import net.javacrumbs.shedlock.core.LockProvider;
import org.junit.jupiter.api.Test;
import org.springframework.boot.autoconfigure.AutoConfigurations;
import org.springframework.boot.jdbc.autoconfigure.DataSourceAutoConfiguration;
import org.springframework.boot.test.context.FilteredClassLoader;
import org.springframework.boot.test.context.runner.ApplicationContextRunner;
import org.springframework.integration.support.locks.DefaultLockRegistry;
import org.springframework.integration.support.locks.LockRegistry;

/** The adapters' conditionals: present, peer absent, user bean backs off, property off. */
class PgLockAdaptersAutoConfigurationTest {

    private static final PgTestDatabase db = PgTestDatabase.get();

    private final ApplicationContextRunner runner = new ApplicationContextRunner()
            .withConfiguration(AutoConfigurations.of(DataSourceAutoConfiguration.class, PgLockAutoConfiguration.class,
                    PgLockAdaptersAutoConfiguration.class))
            .withPropertyValues("spring.datasource.url=" + db.jdbcUrl(), "spring.datasource.username=" + db.user(),
                    "spring.datasource.password=" + db.password(),
                    "pglock.namespace=" + PgTestDatabase.uniqueName("adapters-autoconf"));

    @Test
    void withThePeersOnTheClasspathBothAdaptersAreThereAndWork() {
        runner.run(context -> {
            assertThat(context).hasSingleBean(PgLockShedLockProvider.class).hasSingleBean(PgLockRegistry.class);
            LockProvider provider = context.getBean(LockProvider.class);
            provider.lock(new LockConfiguration(Instant.now(), "wired", Duration.ofMinutes(1), Duration.ZERO))
                    .orElseThrow().unlock();
            LockRegistry<?> registry = context.getBean(LockRegistry.class);
            assertThat(registry.executeLocked("wired", () -> "ran")).isEqualTo("ran");
        });
    }

    @Test
    void withoutThePeersThereIsNoAdapter() {
        runner.withClassLoader(new FilteredClassLoader(LockProvider.class, LockRegistry.class))
                .run(context -> assertThat(context).hasNotFailed().doesNotHaveBean(PgLockShedLockProvider.class)
                        .doesNotHaveBean(PgLockRegistry.class));
    }

    @Test
    void anApplicationsOwnBeansWinAndThePropertiesTurnThemOff() {
        runner.withBean(DefaultLockRegistry.class, DefaultLockRegistry::new)
                .withBean("ownProvider", LockProvider.class, () -> configuration -> java.util.Optional.empty())
                .run(context -> assertThat(context).doesNotHaveBean(PgLockShedLockProvider.class)
                        .doesNotHaveBean(PgLockRegistry.class).hasSingleBean(LockRegistry.class));
        runner.withPropertyValues("pglock.adapters.shedlock.enabled=false",
                "pglock.adapters.spring-integration.enabled=false")
                .run(context -> assertThat(context).hasNotFailed().doesNotHaveBean(PgLockShedLockProvider.class)
                        .doesNotHaveBean(PgLockRegistry.class));
    }
}
