# Test client for credbroker's SDK compatibility matrix (tests/e2e/test_compat.py):
# the AWS SDK for Ruby as packaged by Debian (ruby-aws-sdk-core, which bundles
# Aws::STS), unmodified.
#
#   ruby probe.rb get SOURCE         one credential fetch, then STS GetCallerIdentity
#                                    (env STS_ENDPOINT) when set
#   ruby probe.rb region             the region an Aws::STS::Client resolves with no
#                                    AWS_REGION (null: 3.168 never asks IMDS)
#   ruby probe.rb loop imds SECONDS  GetCallerIdentity once per second through one
#                                    Aws::STS::Client (the SDK's refreshing credentials)
#
# SOURCE:
#   imds     = Aws::InstanceProfileCredentials.new(port: <port of the endpoint URL>): the
#              endpoint comes from AWS_EC2_METADATA_SERVICE_ENDPOINT, but 3.168 ignores the
#              URL's port and connects to :port, default 80 (aws/aws-sdk-ruby#2997, fixed in
#              #2998, 2024), so the documented :port option is passed explicitly;
#   imds-env = Aws::InstanceProfileCredentials.new, environment only (as the chain builds it);
#   chain    = Aws::CredentialProviderChain (what a client uses when given no credentials).
# RUBY_HTTP_DEBUG=1 sends the provider's HTTP wire trace to stderr.
# Prints one JSON line; exits non-zero on failure.

require 'json'
require 'time'
require 'uri'
require 'aws-sdk-core'

VERSION = "aws-sdk-core #{Aws::CORE_GEM_VERSION}, ruby #{RUBY_VERSION}".freeze

def emit(fields)
  puts JSON.generate({ sdk: 'ruby', version: VERSION }.merge(fields))
  $stdout.flush
end

def debug_opts
  ENV['RUBY_HTTP_DEBUG'] == '1' ? { http_debug_output: $stderr } : {}
end

def provider(source)
  case source
  when 'imds'
    port = URI.parse(ENV.fetch('AWS_EC2_METADATA_SERVICE_ENDPOINT')).port
    Aws::InstanceProfileCredentials.new(port: port, **debug_opts)
  when 'imds-env'
    Aws::InstanceProfileCredentials.new(**debug_opts)
  when 'chain'
    Aws::CredentialProviderChain.new.resolve
  else
    raise ArgumentError, "unknown source #{source}"
  end
end

def sts_client(credentials)
  endpoint = ENV['STS_ENDPOINT']
  return nil if endpoint.nil? || endpoint.empty?

  Aws::STS::Client.new(region: 'us-east-1', endpoint: endpoint, credentials: credentials,
                       retry_limit: 0)
end

def get(source)
  prov = provider(source)
  raise 'no credentials found' if prov.nil?

  creds = prov.credentials
  raise "#{prov.class} returned no credentials" if creds.nil? || creds.access_key_id.to_s.empty?

  out = {
    mode: 'get', ok: true, source: prov.class.name, access_key_id: creds.access_key_id,
    has_secret: !creds.secret_access_key.to_s.empty?, has_token: !creds.session_token.to_s.empty?,
    expiration: prov.respond_to?(:expiration) && prov.expiration ? prov.expiration.utc.iso8601 : nil
  }
  sts = sts_client(prov)
  out[:arn] = sts.get_caller_identity.arn if sts
  emit(out)
end

def loop_calls(source, seconds)
  prov = provider(source)
  raise 'no credentials found' if prov.nil?

  sts = sts_client(prov) or raise 'STS_ENDPOINT is not set'
  calls = failures = 0
  keys = []
  arns = {}
  errors = []
  deadline = Process.clock_gettime(Process::CLOCK_MONOTONIC) + seconds
  while Process.clock_gettime(Process::CLOCK_MONOTONIC) < deadline
    tick = Process.clock_gettime(Process::CLOCK_MONOTONIC)
    calls += 1
    begin
      # What the signer uses: RefreshingCredentials#credentials refreshes when near expiry.
      key = prov.credentials.access_key_id
      raise 'empty access key (the provider failed to load credentials)' if key.to_s.empty?

      keys << key unless keys.include?(key)
      arns[sts.get_caller_identity.arn] = true
    rescue StandardError => e
      failures += 1
      errors << "#{Time.now.utc.iso8601} #{e.class}: #{e.message}" if errors.size < 5
    end
    rest = 1.0 - (Process.clock_gettime(Process::CLOCK_MONOTONIC) - tick)
    sleep(rest) if rest.positive?
  end
  emit(mode: 'loop', ok: failures.zero?, source: prov.class.name, calls: calls, failures: failures,
       distinct_keys: keys.size, keys: keys, arns: arns.keys.sort, errors: errors)
  exit(1) unless failures.zero?
end

def region
  region = begin
    Aws::STS::Client.new.config.region
  rescue Aws::Errors::MissingRegionError
    nil
  end
  emit(mode: 'region', ok: true, region: region)
end

mode, *args = ARGV
begin
  if mode == 'get' && args.size == 1
    get(args[0])
  elsif mode == 'region' && args.empty?
    region
  elsif mode == 'loop' && args.size == 2
    loop_calls(args[0], Float(args[1]))
  else
    warn 'usage: probe.rb get imds|imds-env|chain | region | loop imds SECONDS'
    exit 2
  end
rescue StandardError => e
  warn e.full_message
  emit(mode: mode, ok: false, error: "#{e.class}: #{e.message}")
  exit 1
end
