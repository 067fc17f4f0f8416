//! The lab API server authorizes like kube-apiserver with RBAC: the `limited` user of each
//! cluster may do only what Roles and bindings in the API grant it, access reviews answer
//! from the same authorizer, and service-account tokens authenticate as their account.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest};
use k8s_openapi::api::authorization::v1::{SelfSubjectAccessReview, SubjectAccessReview};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DynamicObject, ListParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::Discovery;
use mtcd_tests::Lab;
use serde_json::{Value, json};

fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).expect("valid test object")
}

fn api_err(r: Result<impl std::fmt::Debug, kube::Error>) -> kube::core::Status {
    match r {
        Err(kube::Error::Api(e)) => *e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn create<K>(api: &Api<K>, v: Value) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::Serialize + serde::de::DeserializeOwned,
{
    api.create(&PostParams::default(), &obj(v)).await.expect("create")
}

fn widgets_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1", "Widget"), "widgets")
}

async fn setup_shop(admin: &kube::Client) {
    for ns in ["shop", "other"] {
        create(&Api::<Namespace>::all(admin.clone()), json!({"metadata": {"name": ns}})).await;
    }
    let crds: Api<DynamicObject> = Api::all_with(
        admin.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    crds.create(
        &PostParams::default(),
        &obj(json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}})),
    )
    .await
    .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "shop");
    for name in ["one", "two"] {
        create(&cms, json!({"metadata": {"name": name}, "data": {"k": name}})).await;
    }
}

#[tokio::test]
async fn the_limited_user_gets_only_what_rbac_objects_grant() {
    let lab = Lab::up();
    let admin = lab.client("lab-src").await;
    let limited = lab.client("lab-src-limited").await;
    assert_eq!(lab.info["clusters"]["src"]["limited_context"], "lab-src-limited");
    setup_shop(&admin).await;
    let widgets: Api<DynamicObject> = Api::namespaced_with(limited.clone(), "shop", &widgets_resource());

    // Nothing is granted: 403 with the real message and Status details.
    let e = api_err(widgets.list(&ListParams::default()).await);
    assert_eq!((e.code, e.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        e.message,
        "widgets.example.com is forbidden: User \"limited\" cannot list resource \"widgets\" in API group \"example.com\" in the namespace \"shop\""
    );
    let d = e.details.expect("details");
    assert_eq!((d.group.as_str(), d.kind.as_str(), d.name.as_str()), ("example.com", "widgets", ""));
    let e = api_err(Api::<Namespace>::all(limited.clone()).list(&ListParams::default()).await);
    assert_eq!(
        e.message,
        "namespaces is forbidden: User \"limited\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"
    );
    // Discovery is open to every authenticated user (system:discovery).
    Discovery::new(limited.clone()).run().await.expect("discovery as the limited user");

    // A Role and a RoleBinding in shop grant listing widgets there, and nothing else.
    let roles: Api<Role> = Api::namespaced(admin.clone(), "shop");
    create(
        &roles,
        json!({"metadata": {"name": "widget-reader"},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["get", "list", "watch"]}]}),
    )
    .await;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "shop");
    create(
        &bindings,
        json!({"metadata": {"name": "limited-reads-widgets"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "widget-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "limited"}]}),
    )
    .await;
    assert!(widgets.list(&ListParams::default()).await.unwrap().items.is_empty());
    let elsewhere: Api<DynamicObject> = Api::namespaced_with(limited.clone(), "other", &widgets_resource());
    assert_eq!(api_err(elsewhere.list(&ListParams::default()).await).code, 403);
    let e = api_err(
        widgets
            .create(
                &PostParams::default(),
                &obj(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})),
            )
            .await,
    );
    assert!(e.message.contains("cannot create resource \"widgets\""), "{}", e.message);

    // resourceNames restrict get to the named objects; a list is not a get of a name.
    create(
        &roles,
        json!({"metadata": {"name": "cm-one"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["one"]}]}),
    )
    .await;
    create(
        &bindings,
        json!({"metadata": {"name": "cm-one"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-one"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "limited-users"}]}),
    )
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(limited.clone(), "shop");
    assert_eq!(cms.get("one").await.unwrap().data.unwrap()["k"], "one");
    let e = api_err(cms.get("two").await);
    assert_eq!(
        e.message,
        "configmaps \"two\" is forbidden: User \"limited\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"shop\""
    );
    assert_eq!(api_err(cms.list(&ListParams::default()).await).code, 403);

    // A ClusterRoleBinding to the user's group: `view` in every namespace, but no Secrets.
    let crbs: Api<ClusterRoleBinding> = Api::all(admin.clone());
    create(
        &crbs,
        json!({"metadata": {"name": "limited-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "limited-users"}]}),
    )
    .await;
    assert!(Api::<Pod>::namespaced(limited.clone(), "other").list(&ListParams::default()).await.is_ok());
    assert!(cms.list(&ListParams::default()).await.unwrap().items.len() >= 2, "one, two (and kube-root-ca.crt)");
    let e = api_err(Api::<Secret>::namespaced(limited.clone(), "other").list(&ListParams::default()).await);
    assert_eq!(e.code, 403);

    // Escalation: a user cannot grant what it does not hold itself.
    let limited_roles: Api<Role> = Api::namespaced(limited.clone(), "shop");
    let secret_reader = json!({"metadata": {"name": "secret-reader"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]});
    let e = api_err(limited_roles.create(&PostParams::default(), &obj::<Role>(secret_reader.clone())).await);
    assert!(e.message.contains("cannot create resource \"roles\""), "{}", e.message);
    create(
        &bindings,
        json!({"metadata": {"name": "limited-admin"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "limited"}]}),
    )
    .await;
    limited_roles.create(&PostParams::default(), &obj::<Role>(secret_reader)).await.expect("admin holds secrets get");
    let e = api_err(
        limited_roles
            .create(
                &PostParams::default(),
                &obj::<Role>(json!({"metadata": {"name": "node-reader"},
                "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]}]})),
            )
            .await,
    );
    assert_eq!(e.code, 403);
    assert!(
        e.message.contains("is attempting to grant RBAC permissions not currently held")
            && e.message.contains("{APIGroups:[\"\"], Resources:[\"nodes\"], Verbs:[\"list\"]}"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn access_reviews_answer_from_the_same_authorizer() {
    let lab = Lab::up();
    let admin = lab.client("lab-src").await;
    let limited = lab.client("lab-src-limited").await;
    setup_shop(&admin).await;
    let ssar = |verb: &str, resource: &str| -> SelfSubjectAccessReview {
        obj(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "shop", "verb": verb, "group": "example.com", "resource": resource}}}))
    };
    let reviews: Api<SelfSubjectAccessReview> = Api::all(limited.clone());
    let r = reviews.create(&PostParams::default(), &ssar("list", "widgets")).await.unwrap();
    assert!(!r.status.unwrap().allowed);
    let roles: Api<Role> = Api::namespaced(admin.clone(), "shop");
    create(
        &roles,
        json!({"metadata": {"name": "widget-reader"},
        "rules": [{"apiGroups": ["example.com"], "resources": ["widgets"], "verbs": ["list"]}]}),
    )
    .await;
    create(
        &Api::<RoleBinding>::namespaced(admin.clone(), "shop"),
        json!({"metadata": {"name": "rb"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "widget-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "limited"}]}),
    )
    .await;
    let st = reviews.create(&PostParams::default(), &ssar("list", "widgets")).await.unwrap().status.unwrap();
    assert!(st.allowed);
    assert_eq!(
        st.reason.as_deref(),
        Some("RBAC: allowed by RoleBinding \"rb/shop\" of Role \"widget-reader\" to User \"limited\"")
    );
    assert!(!reviews.create(&PostParams::default(), &ssar("delete", "widgets")).await.unwrap().status.unwrap().allowed);
    // A non-resource review.
    let nr: SelfSubjectAccessReview = obj(json!({"spec": {"nonResourceAttributes": {"path": "/apis", "verb": "get"}}}));
    assert!(reviews.create(&PostParams::default(), &nr).await.unwrap().status.unwrap().allowed);
    let bad: SelfSubjectAccessReview = obj(json!({"spec": {}}));
    assert_eq!(api_err(reviews.create(&PostParams::default(), &bad).await).code, 422);

    // SubjectAccessReview: the admin asks about another user; the limited user may not ask.
    let sar: SubjectAccessReview =
        obj(json!({"spec": {"user": "limited", "groups": ["limited-users", "system:authenticated"],
        "resourceAttributes": {"namespace": "shop", "verb": "list", "group": "example.com", "resource": "widgets"}}}));
    assert!(
        Api::<SubjectAccessReview>::all(admin.clone())
            .create(&PostParams::default(), &sar)
            .await
            .unwrap()
            .status
            .unwrap()
            .allowed
    );
    let e = api_err(Api::<SubjectAccessReview>::all(limited.clone()).create(&PostParams::default(), &sar).await);
    assert_eq!(e.code, 403);
    // Reviews are create-only (authorization comes first: the limited user may not list them).
    assert_eq!(api_err(reviews.list(&ListParams::default()).await).code, 403);
    let as_admin: Api<SelfSubjectAccessReview> = Api::all(admin.clone());
    assert_eq!(api_err(as_admin.list(&ListParams::default()).await).code, 405);
    // SelfSubjectReview (`kubectl auth whoami`).
    let me = Api::<SelfSubjectReview>::all(limited.clone())
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
        )
        .await
        .unwrap();
    let info = me.status.unwrap().user_info.unwrap();
    assert_eq!(info.username.as_deref(), Some("limited"));
    assert_eq!(info.groups.unwrap(), vec!["limited-users".to_string(), "system:authenticated".to_string()]);
}

#[tokio::test]
async fn service_account_tokens_authenticate_as_their_account() {
    let lab = Lab::up();
    let admin = lab.client("lab-src").await;
    setup_shop(&admin).await;
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "shop");
    create(&sas, json!({"metadata": {"name": "robot"}})).await;
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), "shop");
    // The annotation naming the account is required.
    let e = api_err(
        secrets
            .create(
                &PostParams::default(),
                &obj(json!({"metadata": {"name": "nameless"}, "type": "kubernetes.io/service-account-token"})),
            )
            .await,
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message.contains("metadata.annotations[kubernetes.io/service-account.name]: Required value"),
        "{}",
        e.message
    );
    create(
        &secrets,
        json!({"metadata": {"name": "robot-token", "annotations": {"kubernetes.io/service-account.name": "robot"}},
        "type": "kubernetes.io/service-account-token"}),
    )
    .await;
    // The token controller fills the Secret in.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let token = loop {
        let s = secrets.get("robot-token").await.unwrap();
        if let Some(t) = s.data.as_ref().and_then(|d| d.get("token")) {
            assert!(s.data.as_ref().unwrap().contains_key("ca.crt"));
            break String::from_utf8(t.0.clone()).unwrap();
        }
        assert!(std::time::Instant::now() < deadline, "token never filled in");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let robot = lab.client_with_token("lab-src", &token).await;
    let me = Api::<SelfSubjectReview>::all(robot.clone())
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
        )
        .await
        .unwrap();
    let info = me.status.unwrap().user_info.unwrap();
    assert_eq!(info.username.as_deref(), Some("system:serviceaccount:shop:robot"));
    assert!(info.groups.unwrap().contains(&"system:serviceaccounts:shop".to_string()));
    let cms: Api<ConfigMap> = Api::namespaced(robot.clone(), "shop");
    let e = api_err(cms.list(&ListParams::default()).await);
    assert!(e.message.contains("User \"system:serviceaccount:shop:robot\" cannot list"), "{}", e.message);
    // A RoleBinding to the ServiceAccount (namespace taken from the binding).
    create(
        &Api::<RoleBinding>::namespaced(admin.clone(), "shop"),
        json!({"metadata": {"name": "robot-view"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot"}]}),
    )
    .await;
    assert!(cms.list(&ListParams::default()).await.is_ok());

    // TokenRequest: a bound token for the same account.
    let tr: TokenRequest = obj(
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 600}}),
    );
    let got: TokenRequest = sas.create_subresource("token", "robot", &PostParams::default(), &tr).await.unwrap();
    let bound = got.status.unwrap().token.expect("a token");
    let robot2 = lab.client_with_token("lab-src", &bound).await;
    assert!(Api::<ConfigMap>::namespaced(robot2.clone(), "shop").list(&ListParams::default()).await.is_ok());
    // The other cluster did not sign it.
    let dst = lab.client_with_token("lab-dst", &bound).await;
    assert_eq!(api_err(Api::<Namespace>::all(dst).list(&ListParams::default()).await).code, 401);
    // Deleting the Secret revokes the legacy token; a token for a deleted account stops working.
    secrets.delete("robot-token", &Default::default()).await.unwrap();
    let e = api_err(cms.list(&ListParams::default()).await);
    assert_eq!((e.code, e.reason.as_str(), e.message.as_str()), (401, "Unauthorized", "Unauthorized"));
    sas.delete("robot", &Default::default()).await.unwrap();
    assert_eq!(api_err(Api::<ConfigMap>::namespaced(robot2, "shop").list(&ListParams::default()).await).code, 401);
}
