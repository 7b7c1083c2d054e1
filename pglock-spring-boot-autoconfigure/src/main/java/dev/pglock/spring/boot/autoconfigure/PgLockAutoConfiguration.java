package dev.pglock.spring.boot.autoconfigure;

import dev.pglock.core.LockClient;
import dev.pglock.spring.DistributedLockAdvisor;
import dev.pglock.spring.LockDefaults;
import dev.pglock.spring.LockTemplate;
import java.time.Duration;
import javax.sql.DataSource;
import org.springframework.beans.factory.ObjectProvider;
import org.springframework.beans.factory.config.BeanDefinition;
import org.springframework.boot.autoconfigure.AutoConfiguration;
import org.springframework.boot.autoconfigure.condition.ConditionalOnBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnClass;
import org.springframework.boot.autoconfigure.condition.ConditionalOnMissingBean;
import org.springframework.boot.autoconfigure.condition.ConditionalOnProperty;
import org.springframework.boot.autoconfigure.condition.ConditionalOnSingleCandidate;
import org.springframework.boot.context.properties.EnableConfigurationProperties;
import org.springframework.boot.context.properties.bind.Binder;
import org.springframework.boot.jdbc.autoconfigure.DataSourceAutoConfiguration;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Role;
import org.springframework.core.env.Environment;

/**
 * Builds pglock from {@code pglock.*}: the lock client on the application's DataSource (or the one
 * marked {@link PgLockDataSource}), a {@link LockTemplate}, and the advisor that applies
 * {@code @DistributedLock}. Every bean backs off when the application defines its own;
 * {@code pglock.enabled=false} turns it all off.
 */
@AutoConfiguration(after = DataSourceAutoConfiguration.class)
@ConditionalOnClass({LockClient.class, DataSource.class})
@ConditionalOnProperty(prefix = "pglock", name = "enabled", havingValue = "true", matchIfMissing = true)
@EnableConfigurationProperties(PgLockProperties.class)
public final class PgLockAutoConfiguration {

    @Bean
    @ConditionalOnMissingBean
    @ConditionalOnBean(DataSource.class)
    PgLockClients pgLockClients(PgLockProperties properties, @PgLockDataSource ObjectProvider<DataSource> lockDataSource,
            ObjectProvider<DataSource> dataSource, Environment environment) {
        PgLockPropertiesValidator.validate(properties);
        // Running work gets most of the shutdown phase to release its locks; the rest is for closing.
        Duration phase = Binder.get(environment).bind("spring.lifecycle.timeout-per-shutdown-phase", Duration.class)
                .orElse(Duration.ofSeconds(30));
        return new PgLockClients(properties, lockDataSource.getIfAvailable(dataSource::getObject),
                phase.multipliedBy(9).dividedBy(10));
    }

    @Bean(destroyMethod = "") // PgLockClients closes it
    @ConditionalOnMissingBean
    @ConditionalOnSingleCandidate(PgLockClients.class)
    LockClient pgLockClient(PgLockClients clients, PgLockProperties properties) {
        return clients.get(properties.getMode());
    }

    @Bean
    @ConditionalOnMissingBean(LockTemplate.class)
    @ConditionalOnSingleCandidate(LockClient.class)
    LockTemplate lockTemplate(LockClient client, ObjectProvider<PgLockClients> clients, PgLockProperties properties) {
        return new LockTemplate(client, mode -> clients.getObject().get(mode), properties.getWait(),
                properties.getHoldAtLeast());
    }

    /** Static and lazy about the template, so that creating it touches no DataSource. */
    @Bean
    @Role(BeanDefinition.ROLE_INFRASTRUCTURE)
    @ConditionalOnMissingBean
    static DistributedLockAdvisor pgLockDistributedLockAdvisor(ObjectProvider<LockTemplate> templates,
            Environment environment) {
        // Bound here rather than injected: this infrastructure bean is created before the others.
        PgLockProperties p = Binder.get(environment).bind("pglock", PgLockProperties.class).orElseGet(PgLockProperties::new);
        LockDefaults defaults = new LockDefaults(p.getMode(), p.getWait(), p.getLease(), p.getHoldAtLeast(),
                p.getHeartbeatInterval());
        return new DistributedLockAdvisor(templates, defaults, p.getAspectOrder());
    }
}
