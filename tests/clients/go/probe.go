// Test client for credbroker's SDK compatibility matrix (tests/e2e/test_compat.py):
// the AWS SDK for Go v2 as packaged by Debian (golang-github-aws-aws-sdk-go-v2-dev),
// unmodified, built offline GOPATH-style by tests/setup.sh into target/compat/go-probe.
//
//	go-probe get                 # config.LoadDefaultConfig → cfg.Credentials.Retrieve,
//	                             # then STS GetCallerIdentity (env STS_ENDPOINT) if set
//	go-probe region              # config.LoadDefaultConfig(config.WithEC2IMDSRegion()) → cfg.Region
//	go-probe loop SECONDS        # GetCallerIdentity once per second through the SDK's
//	                             # credentials cache; reports calls/failures/distinct keys
//
// The credential source is whatever the default chain picks from the environment
// (AWS_EC2_METADATA_SERVICE_ENDPOINT → EC2RoleProvider, AWS_CONTAINER_CREDENTIALS_FULL_URI
// + AWS_CONTAINER_AUTHORIZATION_TOKEN → CredentialsEndpointProvider).
// Prints one JSON line and exits non-zero on failure.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/sts"
)

// Module versions of the Debian package, stamped in by tests/setup.sh with
// -ldflags "-X main.modules=..." (read from each module's go_module_metadata.go).
var modules = ""

func sdkVersion() string {
	v := "aws " + aws.SDKVersion
	if modules != "" {
		v = modules
	}
	return v + "; " + runtime.Version()
}

func emit(v map[string]interface{}) {
	v["sdk"] = "go"
	v["version"] = sdkVersion()
	b, _ := json.Marshal(v)
	fmt.Println(string(b))
}

func fail(mode string, err error) {
	emit(map[string]interface{}{"mode": mode, "ok": false, "error": err.Error()})
	os.Exit(1)
}

func stsClient(cfg aws.Config) (*sts.Client, bool) {
	ep := os.Getenv("STS_ENDPOINT")
	if ep == "" {
		return nil, false
	}
	return sts.NewFromConfig(cfg, func(o *sts.Options) {
		o.EndpointResolver = sts.EndpointResolverFromURL(ep)
		o.Region = "us-east-1"
	}), true
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: go-probe get|region|loop SECONDS")
		os.Exit(2)
	}
	mode := os.Args[1]
	ctx := context.Background()
	switch mode {
	case "get":
		cfg, err := config.LoadDefaultConfig(ctx)
		if err != nil {
			fail(mode, err)
		}
		creds, err := cfg.Credentials.Retrieve(ctx)
		if err != nil {
			fail(mode, err)
		}
		out := map[string]interface{}{
			"mode": mode, "ok": true, "source": creds.Source, "access_key_id": creds.AccessKeyID,
			"expiration": creds.Expires.UTC().Format(time.RFC3339), "can_expire": creds.CanExpire,
		}
		if client, ok := stsClient(cfg); ok {
			who, err := client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
			if err != nil {
				fail(mode, err)
			}
			out["arn"] = aws.ToString(who.Arn)
		}
		emit(out)
	case "region":
		cfg, err := config.LoadDefaultConfig(ctx, config.WithEC2IMDSRegion())
		if err != nil {
			fail(mode, err)
		}
		emit(map[string]interface{}{"mode": mode, "ok": true, "region": cfg.Region})
	case "loop":
		seconds := 60
		if len(os.Args) > 2 {
			if n, err := strconv.Atoi(os.Args[2]); err == nil {
				seconds = n
			}
		}
		cfg, err := config.LoadDefaultConfig(ctx)
		if err != nil {
			fail(mode, err)
		}
		client, ok := stsClient(cfg)
		if !ok {
			fail(mode, fmt.Errorf("STS_ENDPOINT is not set"))
		}
		calls, failures := 0, 0
		keys := []string{}
		seen := map[string]bool{}
		arns := map[string]bool{}
		errs := []string{}
		source := ""
		deadline := time.Now().Add(time.Duration(seconds) * time.Second)
		for time.Now().Before(deadline) {
			tick := time.Now()
			calls++
			// The cached credentials the signer is about to use (same cache, no extra fetch).
			creds, err := cfg.Credentials.Retrieve(ctx)
			if err == nil {
				source = creds.Source
				if !seen[creds.AccessKeyID] {
					seen[creds.AccessKeyID] = true
					keys = append(keys, creds.AccessKeyID)
				}
				var who *sts.GetCallerIdentityOutput
				who, err = client.GetCallerIdentity(ctx, &sts.GetCallerIdentityInput{})
				if err == nil {
					arns[aws.ToString(who.Arn)] = true
				}
			}
			if err != nil {
				failures++
				if len(errs) < 5 {
					errs = append(errs, time.Now().UTC().Format(time.RFC3339)+" "+err.Error())
				}
			}
			if d := time.Second - time.Since(tick); d > 0 {
				time.Sleep(d)
			}
		}
		arnList := []string{}
		for a := range arns {
			arnList = append(arnList, a)
		}
		emit(map[string]interface{}{"mode": mode, "ok": failures == 0, "source": source, "calls": calls,
			"failures": failures, "distinct_keys": len(keys), "keys": keys, "arns": arnList, "errors": errs})
		if failures != 0 {
			os.Exit(1)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown mode "+mode)
		os.Exit(2)
	}
}
