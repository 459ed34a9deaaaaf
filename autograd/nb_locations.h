/* nb_locations.h — where in your code each op was called, for anomaly mode.
 *
 * Compile your own files with -DNB_LOCATIONS (nabla.h then includes this
 * header), or include it after nabla.h. Every op below becomes a
 * function-like macro that records __FILE__ and __LINE__ before calling the
 * real function, which has the same name (a macro is not expanded inside
 * its own expansion):
 *
 *   #define nb_matmul(...) (nb__where_push(__FILE__, __LINE__), nb__where_pop(nb_matmul(__VA_ARGS__)))
 *
 * With anomaly mode on (nb_set_detect_anomaly), each node keeps the place,
 * and an op that makes a NaN or an infinity, or whose backward does, is
 * reported with it: "... at train.c:42". The ops a layer or a loss runs
 * inside the library are reported at the line that called the layer
 * (nb_module_forward) or the loss. Taking an op's address (nb_relu without
 * parentheses) is unaffected.
 *
 * Cost: a push and a pop of a small per-thread stack per call, anomaly mode
 * on or off; without -DNB_LOCATIONS, nothing. Your own ops are placed the
 * same way with NB_AT:  #define swish(x) NB_AT(swish(x))
 *
 * The list covers nb_ops.h and the tensor-returning calls of nb_nn.h that
 * run ops; an op added to nb_ops.h without a line here still works, it is
 * only reported without a place.
 */
#ifndef NB_LOCATIONS_H
#define NB_LOCATIONS_H

#include "nabla.h"

#define NB_AT(call) (nb__where_push(__FILE__, __LINE__), nb__where_pop(call))

#define nb_add(...) NB_AT(nb_add(__VA_ARGS__))
#define nb_sub(...) NB_AT(nb_sub(__VA_ARGS__))
#define nb_mul(...) NB_AT(nb_mul(__VA_ARGS__))
#define nb_div(...) NB_AT(nb_div(__VA_ARGS__))
#define nb_pow(...) NB_AT(nb_pow(__VA_ARGS__))
#define nb_maximum(...) NB_AT(nb_maximum(__VA_ARGS__))
#define nb_minimum(...) NB_AT(nb_minimum(__VA_ARGS__))
#define nb_add_scalar(...) NB_AT(nb_add_scalar(__VA_ARGS__))
#define nb_sub_scalar(...) NB_AT(nb_sub_scalar(__VA_ARGS__))
#define nb_rsub_scalar(...) NB_AT(nb_rsub_scalar(__VA_ARGS__))
#define nb_mul_scalar(...) NB_AT(nb_mul_scalar(__VA_ARGS__))
#define nb_div_scalar(...) NB_AT(nb_div_scalar(__VA_ARGS__))
#define nb_rdiv_scalar(...) NB_AT(nb_rdiv_scalar(__VA_ARGS__))
#define nb_pow_scalar(...) NB_AT(nb_pow_scalar(__VA_ARGS__))
#define nb_rpow_scalar(...) NB_AT(nb_rpow_scalar(__VA_ARGS__))
#define nb_maximum_scalar(...) NB_AT(nb_maximum_scalar(__VA_ARGS__))
#define nb_minimum_scalar(...) NB_AT(nb_minimum_scalar(__VA_ARGS__))
#define nb_sum_to(...) NB_AT(nb_sum_to(__VA_ARGS__))
#define nb_expand(...) NB_AT(nb_expand(__VA_ARGS__))
#define nb_eq(...) NB_AT(nb_eq(__VA_ARGS__))
#define nb_ne(...) NB_AT(nb_ne(__VA_ARGS__))
#define nb_lt(...) NB_AT(nb_lt(__VA_ARGS__))
#define nb_le(...) NB_AT(nb_le(__VA_ARGS__))
#define nb_gt(...) NB_AT(nb_gt(__VA_ARGS__))
#define nb_ge(...) NB_AT(nb_ge(__VA_ARGS__))
#define nb_gt_scalar(...) NB_AT(nb_gt_scalar(__VA_ARGS__))
#define nb_lt_scalar(...) NB_AT(nb_lt_scalar(__VA_ARGS__))
#define nb_where(...) NB_AT(nb_where(__VA_ARGS__))
#define nb_neg(...) NB_AT(nb_neg(__VA_ARGS__))
#define nb_exp(...) NB_AT(nb_exp(__VA_ARGS__))
#define nb_log(...) NB_AT(nb_log(__VA_ARGS__))
#define nb_sqrt(...) NB_AT(nb_sqrt(__VA_ARGS__))
#define nb_abs(...) NB_AT(nb_abs(__VA_ARGS__))
#define nb_sign(...) NB_AT(nb_sign(__VA_ARGS__))
#define nb_sin(...) NB_AT(nb_sin(__VA_ARGS__))
#define nb_cos(...) NB_AT(nb_cos(__VA_ARGS__))
#define nb_square(...) NB_AT(nb_square(__VA_ARGS__))
#define nb_erf(...) NB_AT(nb_erf(__VA_ARGS__))
#define nb_tanh(...) NB_AT(nb_tanh(__VA_ARGS__))
#define nb_sigmoid(...) NB_AT(nb_sigmoid(__VA_ARGS__))
#define nb_relu(...) NB_AT(nb_relu(__VA_ARGS__))
#define nb_leaky_relu(...) NB_AT(nb_leaky_relu(__VA_ARGS__))
#define nb_elu(...) NB_AT(nb_elu(__VA_ARGS__))
#define nb_gelu(...) NB_AT(nb_gelu(__VA_ARGS__))
#define nb_softplus(...) NB_AT(nb_softplus(__VA_ARGS__))
#define nb_clamp(...) NB_AT(nb_clamp(__VA_ARGS__))
#define nb_sum(...) NB_AT(nb_sum(__VA_ARGS__))
#define nb_mean(...) NB_AT(nb_mean(__VA_ARGS__))
#define nb_max(...) NB_AT(nb_max(__VA_ARGS__))
#define nb_min(...) NB_AT(nb_min(__VA_ARGS__))
#define nb_var(...) NB_AT(nb_var(__VA_ARGS__))
#define nb_logsumexp(...) NB_AT(nb_logsumexp(__VA_ARGS__))
#define nb_argmax(...) NB_AT(nb_argmax(__VA_ARGS__))
#define nb_argmin(...) NB_AT(nb_argmin(__VA_ARGS__))
#define nb_softmax(...) NB_AT(nb_softmax(__VA_ARGS__))
#define nb_log_softmax(...) NB_AT(nb_log_softmax(__VA_ARGS__))
#define nb_matmul(...) NB_AT(nb_matmul(__VA_ARGS__))
#define nb_transpose(...) NB_AT(nb_transpose(__VA_ARGS__))
#define nb_permute(...) NB_AT(nb_permute(__VA_ARGS__))
#define nb_reshape(...) NB_AT(nb_reshape(__VA_ARGS__))
#define nb_flatten(...) NB_AT(nb_flatten(__VA_ARGS__))
#define nb_squeeze(...) NB_AT(nb_squeeze(__VA_ARGS__))
#define nb_unsqueeze(...) NB_AT(nb_unsqueeze(__VA_ARGS__))
#define nb_clone(...) NB_AT(nb_clone(__VA_ARGS__))
#define nb_slice(...) NB_AT(nb_slice(__VA_ARGS__))
#define nb_index_select(...) NB_AT(nb_index_select(__VA_ARGS__))
#define nb_gather(...) NB_AT(nb_gather(__VA_ARGS__))
#define nb_index_add(...) NB_AT(nb_index_add(__VA_ARGS__))
#define nb_scatter_add(...) NB_AT(nb_scatter_add(__VA_ARGS__))
#define nb_concat(...) NB_AT(nb_concat(__VA_ARGS__))
#define nb_stack(...) NB_AT(nb_stack(__VA_ARGS__))
#define nb_mse_loss(...) NB_AT(nb_mse_loss(__VA_ARGS__))
#define nb_l1_loss(...) NB_AT(nb_l1_loss(__VA_ARGS__))
#define nb_huber_loss(...) NB_AT(nb_huber_loss(__VA_ARGS__))
#define nb_bce_loss(...) NB_AT(nb_bce_loss(__VA_ARGS__))
#define nb_bce_with_logits_loss(...) NB_AT(nb_bce_with_logits_loss(__VA_ARGS__))
#define nb_cross_entropy_loss(...) NB_AT(nb_cross_entropy_loss(__VA_ARGS__))
#define nb_nll_loss(...) NB_AT(nb_nll_loss(__VA_ARGS__))
#define nb_conv2d(...) NB_AT(nb_conv2d(__VA_ARGS__))
#define nb_conv_transpose2d(...) NB_AT(nb_conv_transpose2d(__VA_ARGS__))
#define nb_conv2d_weight_grad(...) NB_AT(nb_conv2d_weight_grad(__VA_ARGS__))
#define nb_max_pool2d(...) NB_AT(nb_max_pool2d(__VA_ARGS__))
#define nb_avg_pool2d(...) NB_AT(nb_avg_pool2d(__VA_ARGS__))
#define nb_adaptive_avg_pool2d(...) NB_AT(nb_adaptive_avg_pool2d(__VA_ARGS__))
#define nb_layer_norm(...) NB_AT(nb_layer_norm(__VA_ARGS__))
#define nb_batch_norm(...) NB_AT(nb_batch_norm(__VA_ARGS__))
#define nb_embedding(...) NB_AT(nb_embedding(__VA_ARGS__))
#define nb_module_forward(...) NB_AT(nb_module_forward(__VA_ARGS__))
#define nb_categorical_crossentropy(...) NB_AT(nb_categorical_crossentropy(__VA_ARGS__))
#define nb_sparse_categorical_crossentropy(...) NB_AT(nb_sparse_categorical_crossentropy(__VA_ARGS__))

#endif
