#include "relay/routing/sts_policies.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <mutex>

#include "core/clock.h"
#include "core/network.h"
#include "core/write_all.h"

namespace postern {
namespace {

std::once_flag g_curl_init;

// A domain as a file name: what canonicalDomain() makes (letters, digits, '-', '.').
bool safeName(const std::string& domain) {
  return !domain.empty() && domain.size() <= 253 && domain.front() != '.' &&
         domain.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789-.") == std::string::npos;
}

std::string ipText(const sockaddr_storage& ss) {
  std::optional<IpAddress> ip = IpAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&ss));
  if (!ip) return "";
  return ip->v6 ? "[" + ip->toString() + "]" : ip->toString();
}

size_t onBody(char* data, size_t size, size_t n, void* out) {
  auto* body = static_cast<std::string*>(out);
  if (body->size() + size * n > mta_sts::kMaxPolicy) return 0;  // over §3.3's bound: abort
  body->append(data, size * n);
  return size * n;
}

}  // namespace

// One lookup's work on the pool: the cached file, and the HTTPS fetch when needed.
struct StsPolicies::Fetch {
  uv_work_t req{};
  std::shared_ptr<bool> alive;
  std::shared_ptr<std::atomic<bool>> cancel;  // read on the pool thread
  StsPolicies* owner;
  std::function<void(StsAnswer)> cb;
  // In.
  std::string domain, want_id, pin, cache_dir, ca_file;
  uint64_t now = 0;
  // Out.
  std::optional<Known> result;
  std::string note;
  std::string failure;  // StsAnswer::failure

  std::string path() const { return cache_dir + "/" + domain; }

  // "id: ID\nexpires: UNIX\n\n" and the policy as fetched.
  std::optional<Known> readCache() const {
    if (cache_dir.empty() || !safeName(domain)) return std::nullopt;
    const int fd = ::open(path().c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    std::string text(mta_sts::kMaxPolicy + 256, '\0');
    const ssize_t n = ::read(fd, text.data(), text.size());
    ::close(fd);
    if (n <= 0) return std::nullopt;
    text.resize(static_cast<size_t>(n));
    const size_t blank = text.find("\n\n");
    if (!text.starts_with("id: ") || blank == std::string::npos) return std::nullopt;
    const size_t nl = text.find('\n');
    const size_t exp = text.find("\nexpires: ");
    if (exp == std::string::npos || exp != nl) return std::nullopt;
    Known k;
    k.id = text.substr(4, nl - 4);
    k.expires_unix = std::strtoull(text.c_str() + exp + 10, nullptr, 10);
    std::optional<mta_sts::Policy> p =
        mta_sts::parsePolicy(std::string_view(text).substr(blank + 2));
    if (!p) return std::nullopt;
    k.policy = std::move(*p);
    return k;
  }

  void writeCache(const std::string& body, const Known& k) const {
    if (cache_dir.empty() || !safeName(domain)) return;
    ::mkdir(cache_dir.c_str(), 0750);
    const std::string tmp = path() + ".tmp";
    const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    if (fd < 0) return;
    const std::string text =
        "id: " + k.id + "\nexpires: " + std::to_string(k.expires_unix) + "\n\n" + body;
    std::vector<iovec> iov{{const_cast<char*>(text.data()), text.size()}};
    const bool ok = writeAll(fd, iov) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok || ::rename(tmp.c_str(), path().c_str()) != 0) ::unlink(tmp.c_str());
  }

  // The policy file over HTTPS; "" and note set on failure.
  std::optional<std::string> download() {
    std::call_once(g_curl_init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
    CURL* c = curl_easy_init();
    if (c == nullptr) {
      note = "libcurl: cannot start";
      return std::nullopt;
    }
    const std::string host = "mta-sts." + domain;
    const std::string url = "https://" + host + "/.well-known/mta-sts.txt";
    curl_slist* resolve = curl_slist_append(nullptr, (host + ":443:" + pin).c_str());
    std::string body;
    curl_easy_setopt(c, CURLOPT_URL, url.c_str());
    curl_easy_setopt(c, CURLOPT_RESOLVE, resolve);
    curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);  // §3.3: no redirects
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, static_cast<long>(kFetchTimeout * 1000));
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
    if (!ca_file.empty()) curl_easy_setopt(c, CURLOPT_CAINFO, ca_file.c_str());
    curl_easy_setopt(c, CURLOPT_USERAGENT, "Postern");
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, onBody);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, &body);
    // Called at least once a second: a stopping worker does not wait for the timeout.
    curl_easy_setopt(c, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(c, CURLOPT_XFERINFODATA, cancel.get());
    curl_easy_setopt(
        c, CURLOPT_XFERINFOFUNCTION,
        +[](void* flag, curl_off_t, curl_off_t, curl_off_t, curl_off_t) -> int {
          return static_cast<std::atomic<bool>*>(flag)->load() ? 1 : 0;
        });
    const CURLcode rc = curl_easy_perform(c);
    long status = 0;
    char* type = nullptr;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_getinfo(c, CURLINFO_CONTENT_TYPE, &type);
    const bool text_plain = type != nullptr && std::strncmp(type, "text/plain", 10) == 0;
    curl_easy_cleanup(c);
    curl_slist_free_all(resolve);
    if (rc != CURLE_OK) {
      note = url + ": " + curl_easy_strerror(rc);
      if (rc == CURLE_PEER_FAILED_VERIFICATION || rc == CURLE_SSL_CACERT_BADFILE) {
        failure = "sts-webpki-invalid";
      }
    } else if (status != 200) {
      note = url + ": HTTP " + std::to_string(status);
    } else if (!text_plain) {
      note = url + ": not text/plain";
    } else {
      return body;
    }
    return std::nullopt;
  }

  void run() {
    std::optional<Known> file = readCache();
    if (file && file->expires_unix <= now) file.reset();
    if (want_id.empty() || (file && file->id == want_id)) {
      result = std::move(file);
      note = result ? "cached" : "no policy";
      return;
    }
    std::optional<std::string> body = pin.empty() ? std::nullopt : download();
    if (pin.empty()) note = "no address for mta-sts." + domain;
    std::optional<mta_sts::Policy> p = body ? mta_sts::parsePolicy(*body) : std::nullopt;
    if (body && !p) {
      note = "the policy of " + domain + " is not valid";
      failure = "sts-policy-invalid";
    }
    if (!p) {
      // §5.1: a policy that cannot be refreshed keeps applying until it expires.
      result = std::move(file);
      if (result) {
        note += "; the cached policy applies";
        failure.clear();
      } else if (failure.empty()) {
        failure = "sts-policy-fetch-error";
      }
      return;
    }
    Known k{want_id, std::move(*p), 0};
    k.expires_unix = now + k.policy.max_age;
    writeCache(*body, k);
    result = std::move(k);
    note = "fetched";
  }
};

StsPolicies::StsPolicies(uv_loop_t* loop, Resolver& resolver, std::string cache_dir,
                         std::string ca_file)
    : loop_(loop),
      resolver_(resolver),
      cache_dir_(std::move(cache_dir)),
      ca_file_(std::move(ca_file)),
      alive_(std::make_shared<bool>(true)) {}

StsPolicies::~StsPolicies() { *alive_ = false; }

std::optional<StsPolicies::Known> StsPolicies::cached(const std::string& domain) const {
  auto it = known_.find(domain);
  const auto now = static_cast<uint64_t>(unixMillis() / 1000);
  if (it == known_.end() || it->second.expires_unix <= now) return std::nullopt;
  return it->second;
}

void StsPolicies::lookup(const std::string& domain, bool allow_internal,
                         std::function<void(StsAnswer)> cb) {
  resolver_.resolveTxt("_mta-sts." + domain, [this, domain, allow_internal, cb = std::move(cb)](
                                                 int status, std::vector<std::string> txt) mutable {
    if (stopped_) return;
    std::optional<std::string> id;
    int records = 0;
    for (const std::string& t : txt) {
      if (!t.starts_with("v=STSv1")) continue;
      ++records;
      id = mta_sts::parseTxt(t);
    }
    if (records != 1) id.reset();  // §3.1: more than one record is none
    std::optional<Known> known = cached(domain);
    if (known && (!id || known->id == *id)) {
      return cb(
          StsAnswer{known->policy, status == ARES_SUCCESS ? "known" : "known (no record)", ""});
    }
    if (!id) {
      // No record (or none usable): only a policy cached on disk by an earlier run.
      return fetch(domain, "", {}, std::move(cb));
    }
    resolver_.resolveHost(
        "mta-sts." + domain, 443,
        [this, domain, allow_internal, id = *id, cb = std::move(cb)](HopResolution r) mutable {
          if (stopped_) return;
          std::vector<HopAddress> usable;
          for (const HopAddress& a : r.addresses) {
            auto ip = IpAddress::fromSockaddr(reinterpret_cast<const sockaddr*>(&a.addr));
            if (ip && (allow_internal || !ip->isInternal())) usable.push_back(a);
          }
          fetch(domain, id, std::move(usable), std::move(cb));
        });
  });
}

void StsPolicies::fetch(const std::string& domain, const std::string& id,
                        std::vector<HopAddress> addrs, std::function<void(StsAnswer)> cb) {
  auto* f = new Fetch;
  f->req.data = f;
  f->alive = alive_;
  f->cancel = cancel_;
  f->owner = this;
  f->cb = std::move(cb);
  f->domain = domain;
  f->want_id = id;
  f->pin = addrs.empty() ? "" : ipText(addrs.front().addr);
  f->cache_dir = cache_dir_;
  f->ca_file = ca_file_;
  f->now = static_cast<uint64_t>(unixMillis() / 1000);
  const int rc = uv_queue_work(
      loop_, &f->req, [](uv_work_t* req) { static_cast<Fetch*>(req->data)->run(); },
      [](uv_work_t* req, int) {
        std::unique_ptr<Fetch> f(static_cast<Fetch*>(req->data));
        if (!*f->alive || f->owner->stopped_) return;
        StsAnswer a;
        if (f->result) {
          f->owner->known_[f->domain] = *f->result;
          a.policy = f->result->policy;
        }
        a.note = f->note;
        a.failure = f->failure;
        f->cb(std::move(a));
      });
  if (rc != 0) {
    std::unique_ptr<Fetch> owned(f);
    owned->cb(StsAnswer{std::nullopt, "cannot queue the fetch", "sts-policy-fetch-error"});
  }
}

}  // namespace postern
